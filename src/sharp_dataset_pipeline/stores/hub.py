"""The Hugging Face Hub store: a dataset (or model) repo as artifact store and coordination medium.

``HubStore`` implements the ``Store`` protocol on ``HubSync`` (reads at known shas, the
compare-and-swap commit loop and its retry rules, budgets) and the pure planners of ``hub_ops``.

Commit budget on the steady path: one commit per batch (files, index shard, ledger delta, unit done
markers, lease renewals and this client's progress file together), one per unit lease, one per
``release``, and one compaction per ``auto_compact_shards`` batches; failures recorded with
``record_failures`` and completed followups ride on the next publish commit (or one at ``close``).
Completed followups are also journaled on this client's disk as they happen (``hub_journal``), so
a kill -9 before that commit repeats none of them.
``budget_report()`` gives commits last hour, API calls and both per published item.

Layout (``hub_shards``): a new dataset is published in the sharded layout (WebDataset tars, a
Parquet index) unless ``layout="files"``; a dataset keeps the layout recorded in
``.coord/layout.json`` (one that predates the marker and holds rows is ``files``). In the shards
layout the tars and the step's Parquet index shard ride on the same one commit per batch.

Repo shape (files layout): per-item files move under an id-prefix folder (``layout.item_path(fanout=True)``)
once the folder holding item folders has ``fanout_threshold`` (5000) of them, so it stays under
5000 + 4096 prefix folders, below the Hub's 10k entries per folder; a warning is logged when the
repo passes ``warn_files`` (80k) files, well before the Hub's 100k.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StoreError
from ..publish import layout
from ..publish.card import CardFacts, card_facts, card_is_stale, render_card
from ..publish.index import decode_rows
from ..publish.layout_choice import FILES, PREDECESSOR_DIR, SHARDS, check_layout
from ..publish.shard_layout import DEFAULT_MAX_SHARD_BYTES
from ..records import Batch, Failure, Followup, IndexRow, ItemState, Lease, Unit
from .base import PublishPacing, PublishReceipt, UnitStatus
from .commit_budget import DEFAULT_COMMITS_PER_HOUR
from .hub_compact import HubCompaction
from .hub_files_index import HubFilesIndex, list_twins
from .hub_journal import FollowupJournal, journal_path
from .hub_ops import (
    FANOUT_THRESHOLD,
    Plan,
    PublishInputs,
    plan_acquire,
    plan_card,
    plan_publish,
    plan_release,
    plan_renew,
    to_replace,
)
from .hub_shard_remove import takedown_dir
from .hub_shards import (
    add_marker,
    add_packed,
    repo_layout,
    shard_batch,
)
from .hub_state import PROGRESS, HubState, folder_exists, parse_content
from .hub_sync import HubSync
from .shard_packer import ShardPacker

if TYPE_CHECKING:
    from .hub_admin import HubAdmin
from .item_checks import screen_batch

log = logging.getLogger(__name__)


def _nonce() -> str:
    return secrets.token_hex(6)


def _stoppable_sleep(stop: threading.Event) -> Callable[[float], None]:
    """A sleep that ends when ``stop`` is set; once it is set, a plain sleep (the short waits a
    stopping run still makes, e.g. a 409's backoff)."""

    def sleep(seconds: float) -> None:
        if stop.is_set():
            time.sleep(seconds)
        else:
            stop.wait(seconds)

    return sleep


@dataclasses.dataclass(frozen=True)
class HubOptions:
    """Which Hub repo a store publishes to and within which limits (built once from the settings)."""

    repo_id: str
    repo_type: str = "dataset"
    private: bool = True
    token: str | None = dataclasses.field(default=None, repr=False)  # a secret: never in a repr or log
    endpoint: str | None = None
    index_path: str = "data/train.jsonl"
    commits_per_hour: int = DEFAULT_COMMITS_PER_HOUR
    api_calls_per_5min: int = 800
    auto_compact_shards: int = 256
    fanout_threshold: int = FANOUT_THRESHOLD
    warn_files: int = 80_000
    state_max_age_s: float = 300.0
    retry_base_s: float = 1.0
    max_rate_wait_s: float = 7200.0
    card_title: str = "SHARP Gaussian splats"
    card_sources: tuple[str, ...] = ()
    client_id: str = ""
    cache_dir: Path | None = None
    journal_dir: Path | None = None
    layout: str = ""  # "" = the repo's (a new one gets ``new_layout``), "shards", "files"
    new_layout: str = "shards"
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES


class HubStore(HubCompaction):
    """``Store`` on one Hub repo; several processes and machines may share the repo."""

    def __init__(
        self,
        options: HubOptions,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] | None = None,
        api: Any | None = None,
        rng: random.Random | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """``stop``: the run's stop event. A wait for the commit quota ends when it is set, and once
        it is set no commit waits long for the quota (``CommitQuotaSpent``); ``sleep`` replaces the
        real wait (tests with a fake clock)."""
        o = options
        if sleep is None:
            sleep = time.sleep if stop is None else _stoppable_sleep(stop)
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi(endpoint=o.endpoint, token=o.token)
        layout.index_glob(o.index_path)  # validates the index path
        repo_id, repo_type = o.repo_id, o.repo_type
        self.repo_id, self.repo_type, self.private = repo_id, repo_type, o.private
        self.index_path = o.index_path
        self.description = f"hf:{repo_id}" if repo_type == "dataset" else f"hf:{repo_type}:{repo_id}"
        self.api = api
        self._clock = clock
        self._layout_asked = check_layout(o.layout)
        self._new_layout = check_layout(o.new_layout) or "shards"
        self.layout = FILES if o.layout == FILES else ""  # decided by ``open``
        cache_dir = o.cache_dir or Path(tempfile.mkdtemp(prefix="sharp-hub-"))
        self._packer = ShardPacker(cache_dir / "packs", o.client_id or "hub-store", o.max_shard_bytes)
        self._card_ply = False  # whether the card declares the ``ply`` config
        self._sync = HubSync(
            api, repo_id, repo_type, o.index_path, clock=clock, sleep=sleep, commits_per_hour=o.commits_per_hour,
            api_calls_per_5min=o.api_calls_per_5min, warn_files=o.warn_files, retry_base_s=o.retry_base_s,
            max_rate_wait_s=o.max_rate_wait_s, cache_dir=cache_dir,
            own_cache=o.cache_dir is None, rng=rng or random.Random(),
            stopping=stop.is_set if stop is not None else lambda: False,
        )
        self._sync.finish_plan = HubFilesIndex(
            o.index_path, cache_dir / "twins", self._sync.download, self._list_twins, lambda: self.layout).finish
        self._auto_compact = o.auto_compact_shards
        self._fanout_threshold = o.fanout_threshold
        self._max_age = o.state_max_age_s
        self._card_title, self._card_sources = o.card_title, list(o.card_sources)
        self._card: CardFacts | None = None  # what the repo's generated card lists (None: hand-written)
        self._client_id = o.client_id
        self._commits_per_hour = o.commits_per_hour
        self._progress_seen: dict[str, tuple[str, float] | None] = {}  # progress blob oid -> (client, at)
        self._buf_lock = threading.Lock()
        self._failures: list[Failure] = []
        self._followups_done: list[Followup] = []
        self._published_total = 0
        self._admin_ops: HubAdmin | None = None  # made on first use
        self._journal = (FollowupJournal(journal_path(o.journal_dir, repo_id, o.client_id))
                         if o.journal_dir is not None and o.client_id else None)

    def admin(self) -> HubAdmin:
        """The operation commands (``hub_admin``); also the exclusion set the publish path obeys."""
        if self._admin_ops is None:
            from .hub_admin import HubAdmin

            self._admin_ops = HubAdmin(self._sync, self.description, self._client_id)
        return self._admin_ops

    def budget_report(self) -> dict[str, Any]:
        """Commits last hour, API calls, and both per published item (metrics + final summary)."""
        return self._sync.budget_report()

    def publish_pacing(self) -> PublishPacing:
        """The commit budget and each client's last commit time, from the progress files every publish
        commit carries and the unexpired leases (when each was taken), at a recent state (only progress
        files changed since the last call are read). The
        files layout answers no budget: its batches stay bounded by the files one commit may carry."""
        if self.layout != SHARDS:
            return PublishPacing(0, {}, self._clock())
        state = self._sync.current(self._max_age)
        last: dict[str, float] = {}
        for path in state.paths_of(PROGRESS):
            seen = self._progress_of(state, path)
            if seen is not None:
                last[seen[0]] = max(last.get(seen[0], seen[1]), seen[1])
        now = self._clock()
        for lease in state.leases.values():  # a client that took a unit is about to publish: it counts
            if lease.expires_at > now:  # before its first step lands (a fleet that starts together)
                last[lease.owner] = max(last.get(lease.owner, lease.acquired_at), lease.acquired_at)
        return PublishPacing(self._commits_per_hour, last, now, self._sync.landed_last_hour())

    def _progress_of(self, state: HubState, path: str) -> tuple[str, float] | None:
        """(client, time) of one progress file; None for a maintenance command's (``ops.``) or an
        unreadable one. Cached by blob oid, and this client's own writes are known without a read."""
        oid = state.entries[path]
        if oid not in self._progress_seen:
            body = state.parsed.get(path)
            if body is None:
                body = parse_content(PROGRESS, self._sync.download(path, state.sha))
            ok = isinstance(body, dict) and "action" not in body and isinstance(body.get("at"), (int, float))
            self._progress_seen[oid] = (str(body.get("client", "")), float(body["at"])) if ok else None
        return self._progress_seen[oid]

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the repo (private unless asked otherwise) if missing, read its state, write the card."""
        from huggingface_hub.errors import RepositoryNotFoundError

        try:
            self._sync.api_call(lambda: self.api.repo_info(self.repo_id, repo_type=self.repo_type), missing_ok=True)
        except RepositoryNotFoundError:
            log.info("creating %s repo %s (%s)", self.repo_type, self.repo_id,
                     "private" if self.private else "public")
            self._sync.create_repo(self.private)
        with self._sync.lock:
            state = self._sync.refresh()
            self._ensure_card(state)
        self._load_journal(state)

    def _load_journal(self, state: HubState) -> None:
        """Completions a killed run made but never committed: known done before anything is
        completed again, and carried by the next commit. Entries the repo already has are dropped."""
        if self._journal is None:
            return
        pending = {(f.kind, f.item_id) for f in state.pending_followups}
        entries = self._journal.read()
        keep = [f for f in entries if (f.kind, f.item_id) in pending]
        self._journal.forget([f for f in entries if (f.kind, f.item_id) not in pending])
        if keep:
            log.info("%d download completions from an earlier run of this client will be recorded", len(keep))
        with self._buf_lock:
            have = {(f.kind, f.item_id) for f in self._followups_done}
            self._followups_done.extend(f for f in keep if (f.kind, f.item_id) not in have)

    def _ensure_card(self, state: HubState) -> None:
        """Decide the layout (writing its marker on a new dataset) and write the card if missing,
        in one commit; both are decided again at each state the commit is tried on."""
        found = self._sync.api_call(lambda: self.api.get_paths_info(
            self.repo_id, [layout.README_PATH], revision=state.sha, repo_type=self.repo_type))
        if found:
            try:  # what the card lists, so a publish that brings more can refresh it in its commit
                text = self._sync.download(layout.README_PATH, state.sha).decode("utf-8")
                self._card, self._card_ply = card_facts(text), "config_name: ply" in text
            except (StoreError, UnicodeDecodeError) as exc:
                log.warning("dataset card unreadable (%s): it is left as it is", exc)
        client = self._client_id or "hub-store"
        facts = CardFacts(frozenset(self._card_sources))

        def build(st: HubState) -> Plan | None:
            self.layout, mark = repo_layout(st, self._layout_asked, lambda: self._has_predecessor(st),
                                             self._new_layout)
            if found and not mark:
                return None
            card = None if found else self._render_card(facts)
            plan = plan_card(card, client, self._clock(), _nonce())
            if mark:
                add_marker(plan, self.layout)
            return plan

        self._sync.run(build, max_age=math.inf)
        if not found:
            self._card = facts
        log.info("%s: %s layout", self.repo_id, self.layout)

    def _list_twins(self, sha: str) -> list[str]:
        self._sync.count("api")
        return self._sync.read_at(sha, lambda: list_twins(self.api, self.repo_id, self.repo_type, sha))

    def _has_predecessor(self, state: HubState) -> bool:
        return bool(self._sync.api_call(lambda: folder_exists(
            self.api, self.repo_id, self.repo_type, state.sha, PREDECESSOR_DIR)))

    def _render_card(self, facts: CardFacts, ply: bool | None = None) -> str:
        return render_card(title=self._card_title, sources=sorted(facts.sources),
                           predictors=sorted(facts.predictors), index_glob=layout.index_glob(self.index_path),
                           layout=self.layout or FILES, ply_config=self._card_ply if ply is None else ply,
                           repo=self.repo_id, typed_index=self.layout == FILES,
                           splat_fields=facts.splat_fields, ply_fields=facts.ply_fields)

    def _card_update(self, rows: list[IndexRow], everything: bool = False, force: bool = False) -> CardFacts | None:
        """The facts of a refreshed card when ``rows`` (a batch; or, ``everything``, every row of a
        compaction) make the generated card out of date, or ``force`` (its configs change); ``None``
        to leave it (or a hand-written one)."""
        if self._card is None or not (force or card_is_stale(self._card, None if everything else rows)):
            return None
        seen = CardFacts.of_rows(rows)
        facts = seen if everything else self._card.union(seen)
        return None if facts == self._card and not force else facts

    def card_refresh(self, rows: list[IndexRow], ply_shards: bool) -> tuple[bytes, tuple[CardFacts, bool]] | None:
        """The card a commit bringing ``rows`` (and PLY tars, ``ply_shards``) must carry to stay true, and
        what ``card_landed`` notes once that commit landed; None: the card stays (or is hand-written)."""
        ply = self._card_ply or ply_shards
        card = self._card_update(rows, force=ply != self._card_ply)
        if card is not None:
            ply = ply or bool(card.ply_fields)
        return None if card is None else (self._render_card(card, ply).encode("utf-8"), (card, ply))

    def card_landed(self, refreshed: tuple[CardFacts, bool]) -> None:
        self._card, self._card_ply = refreshed

    def close(self) -> None:
        """Commit what is still buffered (failures, completed followups), then drop the read cache."""
        with self._buf_lock:
            pending = bool(self._failures or self._followups_done)
        if pending and self._sync.state is not None:
            self.publish(Batch(client_id=self._client_id or "hub-store"))
        self._packer.clear()
        self._sync.close()

    # -- Store protocol --------------------------------------------------------------------------

    def acquire(self, unit: Unit, client_id: str, ttl_s: float, reopen: bool = False) -> Lease | None:
        """Take a unit by compare-and-swap. A recent state that shows it done (unless ``reopen``) or
        validly held by another client answers no without a request (a unit seen held is not retried
        at once)."""
        cached = self._sync.state
        if (cached is not None and self._sync.age() <= self._max_age
                and plan_acquire(cached, unit, client_id, ttl_s, self._clock(), "probe", reopen) is None):
            return None
        with self._sync.lock:
            plan, _ = self._sync.run(
                lambda st: plan_acquire(st, unit, client_id, ttl_s, self._clock(), _nonce(), reopen), max_age=0.0)
        return plan.lease if plan is not None and plan.lease is not None else None

    def renew(self, unit_keys: Iterable[str], client_id: str, ttl_s: float) -> None:
        """Extend our leases now, in one commit (publish commits also renew, for free)."""
        keys = list(unit_keys)
        with self._sync.lock:
            plan, _ = self._sync.run(
                lambda st: plan_renew(st, keys, client_id, ttl_s, self._clock(), _nonce()), max_age=math.inf)
        self._note_lost(plan)

    def release(self, unit_keys: Iterable[str], client_id: str) -> None:
        """Delete our own leases of ``unit_keys`` in one commit; others' leases stay."""
        keys = list(unit_keys)
        with self._sync.lock:
            self._sync.run(lambda st: plan_release(st, keys, client_id), max_age=0.0)

    def unit_status(self, unit_keys: Iterable[str]) -> dict[str, UnitStatus]:
        """Done flag and unexpired lease per unit, from a state at most ``state_max_age_s`` old."""
        state = self._sync.current(self._max_age)
        now = self._clock()
        out = {}
        for key in unit_keys:
            lease = state.leases.get(key)
            out[key] = UnitStatus(done=key in state.done_units,
                                  lease=lease if lease is not None and not lease.expired(now) else None,
                                  models=state.unit_models(key), failed=state.unit_failed.get(key, 0))
        return out

    def item_states(self, item_ids: Iterable[str]) -> dict[str, ItemState]:
        """Published (the index is the done set) and failure tallies, from a recent state; a stale
        answer costs at most duplicate work, never a duplicate row (publish re-checks at the head)."""
        state = self._sync.current(self._max_age)
        gone = self.admin().excluded(state)
        with self._buf_lock:
            buffered = list(self._failures)
        extra: dict[str, list[Failure]] = {}
        for f in buffered:
            extra.setdefault(f.item_id, []).append(f)
        out = {}
        for item_id in item_ids:
            if item_id in gone:  # removed: never published again (``remove``)
                out[item_id] = ItemState(published=item_id in state.published, excluded=True)
                continue
            tally = state.failures.get(item_id)
            mine = extra.get(item_id, [])
            if item_id not in state.published and tally is None and not mine:
                continue
            made = state.made_by(item_id) or ("", "", "")
            out[item_id] = ItemState(
                published=item_id in state.published,
                failed_permanently=bool(tally and tally.permanent) or any(not f.transient for f in mine),
                transient_failures=(tally.transient if tally else 0) + sum(f.transient for f in mine),
                predictor=made[1], model_version=made[2],
            )
        return out

    def record_failures(self, failures: list[Failure], client_id: str) -> None:
        """Failures ride on the next publish commit (or one commit at close): never a commit each."""
        with self._buf_lock:
            self._failures.extend(failures)

    def complete_followups(self, done: list[Followup]) -> None:
        """Completions are journaled on this client's disk at once, and ride on the next publish
        commit (or one commit at close)."""
        if self._journal is not None:
            self._journal.append(done)
        with self._buf_lock:
            self._followups_done.extend(done)

    def pending_followups(self, kind: str) -> list[Followup]:
        """Followups recorded by any client's publish and not completed yet."""
        state = self._sync.current(self._max_age)
        with self._buf_lock:
            done = {(f.kind, f.item_id) for f in self._followups_done}
        return [f for f in state.pending_followups if f.kind == kind and (f.kind, f.item_id) not in done]

    def publish(self, batch: Batch) -> PublishReceipt:
        """One commit: the batch's files, its index shard, ledger delta, done markers, renewals."""
        batch, failed, held = screen_batch(batch)
        with self._buf_lock:
            failures, self._failures = self._failures, []
            done, self._followups_done = self._followups_done, []
        client = batch.client_id or self._client_id

        def build(state: HubState) -> Plan | None:
            todo, fails = self.admin().without_excluded(state, batch, failures)
            # ``run --redo``: the index files holding rows this commit replaces, read at the parent.
            rows = {p: decode_rows(self._sync.download(p, state.sha))
                    for p in state.index_files_of(to_replace(state, todo))}
            inputs = PublishInputs(client_id=client, index_path=self.index_path, now=self._clock(),
                                   nonce=_nonce(), extra_failures=fails, followups_done=done,
                                   published_total=self._published_total,
                                   fanout_threshold=self._fanout_threshold, index_rows=rows)
            packed = None
            if self.layout == SHARDS:  # the new items as tars + the step's Parquet index shard
                todo, packed, unpacked[:] = shard_batch(state, todo, self._packer)
            plan = plan_publish(state, todo, inputs)
            if packed is not None and plan is not None and plan.replaced_ids:  # ``--redo`` inside shards
                gone = set(plan.replaced_ids)
                old = {r.id: r for found in rows.values() for r in found if r.id in gone}
                self.admin().replace_in_shards(state, plan, old, work.name)
            # The first PLY tars give the card its ``ply`` config, in this commit.
            has_ply = plan is not None and packed is not None and add_packed(plan, packed)
            card = self.card_refresh([pi.row for pi in todo.items], has_ply)
            if plan is not None and card is not None and plan.published_ids:  # rides on this commit
                plan.adds[layout.README_PATH] = card[0]
                refreshed.append(card[1])
            return plan

        refreshed: list[tuple[CardFacts, bool]] = []
        unpacked: list[Failure] = []  # items the shard packer refused (they failed alone)
        work = takedown_dir(self._sync.reader.cache_dir)  # a redo's rewritten tars, until the commit is over
        try:
            with self._sync.lock:
                plan, state = self._sync.run(build, max_age=math.inf)
        except BaseException:
            with self._buf_lock:  # nothing landed: keep them for the next commit
                self._failures[:0], self._followups_done[:0] = failures, done
            raise
        finally:
            self._packer.clear()  # landed (the repo holds them) or not: packed again if sent again
            work.cleanup()
        self._note_lost(plan)
        if plan is not None and refreshed and layout.README_PATH in plan.adds:
            self.card_landed(refreshed[-1])
        if self._journal is not None and done and plan is not None:
            self._journal.forget(done)  # the commit carried them (a non-empty delta always commits)
        return self._receipt(plan, state, client, [*failed, *unpacked], held)

    def _receipt(self, plan: Plan | None, state: HubState, client: str, failed: list[Failure],
                 held: list[str]) -> PublishReceipt:
        """What a publish step's commit did; after one that landed, the counters, and an automatic
        compaction when one is due."""
        lost = list(plan.lost) if plan is not None else []
        if plan is None or not (plan.adds or plan.deletes):
            return PublishReceipt(published_ids=[], commit="", lost_units=lost, failed=failed, units_held=held)
        self._published_total += len(plan.published_ids)
        self._sync.count("published_items", len(plan.published_ids))
        if plan.skipped_ids:
            log.info("%d items were already published by another client", len(plan.skipped_ids))
        self._maybe_compact(state, client)
        return PublishReceipt(published_ids=list(plan.published_ids), commit=state.sha, lost_units=lost,
                              failed=failed, units_held=held, replaced_ids=list(plan.replaced_ids))

    def _note_lost(self, plan: Plan | None) -> None:
        if plan is not None and plan.lost:
            self._sync.count("lease_lost", len(plan.lost))
            log.warning("leases taken over by another client: %s", ", ".join(plan.lost))
