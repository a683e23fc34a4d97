"""The Hugging Face Hub store: a dataset (or model) repo as artifact store and coordination medium.

Every write is one ``HfApi.create_commit`` whose ``parent_commit`` is the head the decision was
made at (a compare-and-swap); the retry rules follow the Hub's behaviour (reference §6.3):

- 409 (another commit in progress): nothing was applied; wait with jitter, resend the same intent;
- 412 (the head moved): re-read the state at the new head, decide again, rebuild the operations;
- 429 (commit quota): pause every commit of this client for ``Retry-After`` (or the RateLimit
  header, or the message), then resend;
- 5xx, timeouts, lost connections: the outcome is unknown. Re-read the repo at its head and look
  for the attempt's unique file before deciding anything; an attempt that may still land cannot
  land twice, because it names a parent that the resend's success (or anyone's) supersedes.

Operation objects are built fresh for every attempt (the client mutates them), and no commit is
ever reported as published unless the server answered with its sha or a later head contains it.
State is read at known shas (``hub_state``); heads that go backwards (a lagging repo-info answer)
are detected and re-read through the refs endpoint.

Commit budget on the steady path: one commit per batch (files, index shard, ledger delta, unit done
markers, lease renewals and this client's progress file together), one per unit lease, and one
compaction per ``auto_compact_shards`` batches. A ``CommitBudget`` keeps the client under
``commits_per_hour``; ``budget_report()`` gives the figures.

Repo shape: per-item files move under an id-prefix folder (``layout.item_path(fanout=True)``)
once the folder holding item folders has ``fanout_threshold`` (5000) of them, so it stays under
5000 + 4096 prefix folders, below the Hub's 10k entries per folder; a warning is logged when the
repo passes ``warn_files`` (80k) files, well before the Hub's 100k.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .. import net
from ..errors import RateLimited, StoreError, TransientError
from ..publish import layout
from ..publish.index import decode_rows
from ..records import Batch, Failure, Followup, ItemState, Lease, Unit
from . import hub_retry
from .base import PublishReceipt, UnitStatus
from .commit_budget import DEFAULT_COMMITS_PER_HOUR, CallCounter, CommitBudget, SlidingWindowLimit
from .hub_ops import (
    FANOUT_THRESHOLD,
    Plan,
    PublishInputs,
    plan_acquire,
    plan_card,
    plan_compact,
    plan_publish,
    plan_release,
    plan_renew,
)
from .hub_state import SHARD, HubState, StateReader, classify

log = logging.getLogger(__name__)

MAX_CONFLICTS = 100  # 412s for one intent; each one means another client made progress
MAX_BUSY = 30  # 409s for one intent
MAX_UNKNOWN = 10  # unknown outcomes for one intent


def _nonce() -> str:
    return secrets.token_hex(6)


class HubStore:
    """``Store`` on one Hub repo; several processes and machines may share the repo."""

    def __init__(
        self,
        repo_id: str,
        *,
        repo_type: str = "dataset",
        private: bool = True,
        token: str | None = None,
        endpoint: str | None = None,
        index_path: str = "data/train.jsonl",
        commits_per_hour: int = DEFAULT_COMMITS_PER_HOUR,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        api: Any | None = None,
        api_calls_per_5min: int = 800,
        auto_compact_shards: int = 256,
        fanout_threshold: int = FANOUT_THRESHOLD,
        warn_files: int = 80_000,
        state_max_age_s: float = 300.0,
        retry_base_s: float = 1.0,
        max_rate_wait_s: float = 7200.0,
        card_title: str = "SHARP Gaussian splats",
        card_sources: list[str] | None = None,
        client_id: str = "",
        cache_dir: Path | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if api is None:
            from huggingface_hub import HfApi

            api = HfApi(endpoint=endpoint, token=token)
        layout.index_glob(index_path)  # validates the index path
        self.repo_id, self.repo_type, self.private = repo_id, repo_type, private
        self.index_path = index_path
        self.description = f"hf:{repo_id}" if repo_type == "dataset" else f"hf:{repo_type}:{repo_id}"
        self.api = api
        self._clock, self._sleep = clock, sleep
        self._rng = rng or random.Random()
        self._commits = CommitBudget(commits_per_hour, clock=clock)
        self._api_limit = SlidingWindowLimit(api_calls_per_5min, 300.0, clock)
        self._counter = CallCounter(clock)
        self._auto_compact = auto_compact_shards
        self._fanout_threshold = fanout_threshold
        self._warn_files, self._warned_files = warn_files, 0
        self._max_age = state_max_age_s
        self._retry_base = retry_base_s
        self._max_rate_wait = max_rate_wait_s
        self._card_title, self._card_sources = card_title, list(card_sources or [])
        self._client_id = client_id
        self._own_cache = cache_dir is None
        self._cache_dir = cache_dir or Path(tempfile.mkdtemp(prefix="sharp-hub-"))
        self._reader = StateReader(api, repo_id, repo_type, index_path, self._cache_dir,
                                   self._count, clock)
        self._lock = threading.Lock()  # one committer per client: commits would only 409 each other
        self._read_lock = threading.Lock()
        self._buf_lock = threading.Lock()
        self._state: HubState | None = None
        self._state_gen = 0
        self._fresh_at = -math.inf
        self._contention = 0.0  # moving average of 412s per commit attempt
        self._superseded: set[str] = set()
        self._failures: list[Failure] = []
        self._followups_done: list[Followup] = []
        self._published_total = 0

    # -- accounting ------------------------------------------------------------------------------

    def _count(self, kind: str, n: int = 1) -> None:
        self._counter.add(kind, n)
        if kind == "api":
            for _ in range(n):
                self._api_limit.record()

    def _wait(self, seconds: float, why: str) -> None:
        if seconds <= 0:
            return
        log.info("hub: waiting %.1fs (%s)", seconds, why)
        self._counter.add("waited_ms", int(seconds * 1000))
        self._sleep(seconds)

    def budget_report(self) -> dict[str, Any]:
        """Commits last hour, API calls, and both per published item (metrics + final summary)."""
        report: dict[str, Any] = dict(self._counter.report(self._commits.count()))
        report["commits_per_hour_limit"] = self._commits.limit
        report["commit_pause_s"] = round(self._commits.paused_for(), 3)
        report["leases_lost"] = self._counter.totals["lease_lost"]
        return report

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        """Create the repo (private unless asked otherwise) if missing, read its state, write the card."""
        from huggingface_hub.errors import RepositoryNotFoundError

        try:
            self._api_call(lambda: self.api.repo_info(self.repo_id, repo_type=self.repo_type))
        except RepositoryNotFoundError:
            log.info("creating %s repo %s (%s)", self.repo_type, self.repo_id,
                     "private" if self.private else "public")
            self._api_call(lambda: self.api.create_repo(self.repo_id, repo_type=self.repo_type,
                                                        private=self.private, exist_ok=True))
        with self._lock:
            state = self._refresh()
            self._ensure_card(state)

    def _ensure_card(self, state: HubState) -> None:
        from ..publish.card import render_card

        found = self._api_call(lambda: self.api.get_paths_info(
            self.repo_id, [layout.README_PATH], revision=state.sha, repo_type=self.repo_type))
        if found:
            return
        card = render_card(title=self._card_title, sources=self._card_sources,
                           index_glob=layout.index_glob(self.index_path))
        client = self._client_id or "hub-store"

        def build(st: HubState) -> Plan | None:
            return plan_card(card, client, self._clock(), _nonce())

        self._run(build, max_age=math.inf)

    def close(self) -> None:
        """Commit what is still buffered (failures, completed followups), then drop the read cache."""
        with self._buf_lock:
            pending = bool(self._failures or self._followups_done)
        if pending and self._state is not None:
            self.publish(Batch(client_id=self._client_id or "hub-store"))
        if self._own_cache:
            shutil.rmtree(self._cache_dir, ignore_errors=True)

    # -- reads -----------------------------------------------------------------------------------

    def _api_call(self, fn: Callable[[], Any], kind: str = "api") -> Any:
        """One read call, retried (bounded, jittered) on 5xx / timeouts / 429 through ``net``."""
        from huggingface_hub.errors import HfHubHTTPError

        def once() -> Any:
            self._wait(self._api_limit.delay(), "API calls per 5 minutes")
            self._count(kind)
            try:
                return fn()
            except HfHubHTTPError as exc:
                status = exc.response.status_code if exc.response is not None else 0
                if status == 429:
                    wait = hub_retry.retry_after_s(exc.response.headers, exc.server_message or "", self._clock(), 1)
                    raise RateLimited(f"hub {status}", wait, "hub") from None
                if status >= 500 or status == 408:
                    raise TransientError(f"hub answered {status}") from None
                raise

        return net.call_with_retries(once, attempts=6, base_s=self._retry_base, max_s=30.0,
                                     sleep=self._sleep, retry_on=(TransientError, RateLimited), rng=self._rng)

    def _read_head(self) -> str:
        """The branch head, never one we know to be superseded (repo info can lag behind).

        When repo info names a sha we already saw superseded, the refs endpoint is asked too;
        if both keep naming it, it is believed after a few tries (a spurious refusal, not lag).
        """
        for attempt in range(1, 5):
            info = self._api_call(lambda: self.api.repo_info(self.repo_id, repo_type=self.repo_type))
            sha = str(info.sha)
            if sha not in self._superseded:
                return sha
            self._count("lagged_head")
            refs = self._api_call(lambda: self.api.list_repo_refs(self.repo_id, repo_type=self.repo_type))
            heads = [str(b.target_commit) for b in refs.branches if b.name == "main"]
            if heads and heads[0] not in self._superseded:
                return heads[0]
            if attempt < 4:
                self._wait(self._backoff(attempt), "the head read is behind a commit already seen")
        log.warning("the head of %s stays at %s after a refused commit; trusting it", self.repo_id, sha[:12])
        self._superseded.discard(sha)
        return sha

    def _refresh(self) -> HubState:
        """Read the head and, if it moved, the coordination state at it."""
        with self._read_lock:
            gen = self._state_gen = self._state_gen + 1
            sha = self._read_head()
            current = self._state
            if current is not None and current.sha == sha:
                state = current
            else:
                state = net.call_with_retries(lambda: self._read_state(sha), attempts=4,
                                              base_s=self._retry_base, max_s=30.0, sleep=self._sleep,
                                              rng=self._rng)
            self._set_state(state, gen)
            return state

    def _read_state(self, sha: str) -> HubState:
        import httpx2
        from huggingface_hub.errors import HfHubHTTPError

        try:
            return self._reader.read(sha)
        except (HfHubHTTPError, httpx2.TransportError) as exc:
            status = getattr(getattr(exc, "response", None), "status_code", 0)
            if status and status < 500 and status not in (408, 429):
                raise StoreError(f"reading {self.repo_id} at {sha[:12]} failed with {status}") from None
            raise TransientError(f"reading {self.repo_id} at {sha[:12]}: {type(exc).__name__}") from None

    def _set_state(self, state: HubState, gen: int) -> None:
        if gen >= self._state_gen or self._state is None:
            self._state, self._state_gen = state, gen
        self._fresh_at = self._clock()
        self._check_shape(state)

    def _current(self, max_age: float) -> HubState:
        state = self._state
        if state is None or max_age <= 0 or self._clock() - self._fresh_at > max_age:
            return self._refresh()
        return state

    def _check_shape(self, state: HubState) -> None:
        files = state.file_count
        if files >= self._warn_files and files >= self._warned_files + 5000:
            self._warned_files = files
            log.warning("repo %s holds about %d files; the Hub recommends under 100k per repo: "
                        "compact the index and consider a new repo or a sharded layout", self.repo_id, files)

    # -- the commit loop -------------------------------------------------------------------------

    def _send(self, plan: Plan, parent: str) -> str:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        # Fresh operation objects every attempt: the client mutates them (upload mode, remote oid).
        ops: list[Any] = [
            CommitOperationAdd(path_in_repo=p, path_or_fileobj=c if isinstance(c, bytes) else str(c))
            for p, c in plan.adds.items()
        ]
        ops += [CommitOperationDelete(path_in_repo=p) for p in plan.deletes]
        self._commits.record()
        self._count("commit")
        self._count("api", 1 + math.ceil(len(plan.adds) / 256))  # preupload chunks + the commit
        info = self.api.create_commit(self.repo_id, ops, commit_message=plan.title,
                                      repo_type=self.repo_type, parent_commit=parent)
        if not info.oid or info.oid == parent:
            raise StoreError(f"commit '{plan.title}' was skipped by the client as a no-op")
        return info.oid

    def _backoff(self, attempt: int) -> float:
        return hub_retry.backoff_s(attempt, self._retry_base, self._rng)

    def _run(self, build: Callable[[HubState], Plan | None], *, max_age: float) -> tuple[Plan | None, HubState]:
        """Decide at a state, commit with that state as parent, and follow the retry rules.

        Alone on a repo, the state left by our own last commit is usually still the head, so we
        commit on it directly (2 API calls). When other clients keep moving the head (most of our
        attempts got 412), reading the head first is cheaper than a refused attempt.
        """
        state = self._current(0.0 if self._contention >= 0.5 else max_age)
        unresolved: list[Plan] = []
        plan: Plan | None = None
        tries = {"conflict": 0, "busy": 0, "unknown": 0, "rate": 0}
        rate_waited = 0.0
        while True:
            for earlier in unresolved:
                if earlier.landed(state):
                    self._count("commit_landed")
                    return earlier, state
            if plan is None:
                plan = build(state)
                if plan is None or not (plan.adds or plan.deletes):
                    return plan, state
            self._wait(max(self._commits.delay(), self._api_limit.delay()), "commit budget")
            parent = state.sha
            try:
                sha = self._send(plan, parent)
            except Exception as exc:  # classified below; unknown kinds are re-raised by _outcome
                outcome, wait = hub_retry.classify(exc, self._clock(), tries["rate"])
                tries[outcome] += 1
                self._count({"conflict": "conflict_412", "busy": "busy_409", "rate": "rate_limited_429",
                             "unknown": "unknown_outcome"}[outcome])
                log.info("hub commit '%s' -> %s (attempt %d)", plan.title, outcome, tries[outcome])
                if outcome == "rate":
                    rate_waited += wait
                    if rate_waited > self._max_rate_wait:
                        raise StoreError(f"hub commit quota: waited {rate_waited:.0f}s, giving up") from None
                    self._commits.pause(wait)
                    continue  # same intent; the budget wait above honours the pause
                if outcome == "busy":
                    self._check_tries(tries, "busy", MAX_BUSY, plan)
                    self._wait(self._backoff(tries["busy"]), "another commit in progress (409)")
                    continue
                if outcome == "unknown":
                    self._check_tries(tries, "unknown", MAX_UNKNOWN, plan)
                    unresolved.append(plan)
                    self._commits.pause(wait)
                    self._wait(self._backoff(tries["unknown"]), "unknown commit outcome")
                else:
                    self._contention = 0.7 * self._contention + 0.3
                    self._check_tries(tries, "conflict", MAX_CONFLICTS, plan)
                self._superseded.add(parent)
                state, plan = self._refresh(), None
                continue
            self._superseded.add(parent)
            self._contention *= 0.7
            self._count("commit_landed")
            for path, (oid, content) in plan.known.items():
                self._reader.remember(classify(path, self.index_path), oid, content)
            state = state.with_commit(sha, plan.known, plan.deletes, self._clock())
            with self._read_lock:
                self._state_gen += 1
                self._set_state(state, self._state_gen)
            return plan, state

    def _check_tries(self, tries: dict[str, int], kind: str, limit: int, plan: Plan) -> None:
        if tries[kind] > limit:
            raise StoreError(f"hub commit '{plan.title}' failed: {tries[kind]} x {kind}; nothing was published by it")

    # -- Store protocol --------------------------------------------------------------------------

    def acquire(self, unit: Unit, client_id: str, ttl_s: float) -> Lease | None:
        with self._lock:
            plan, _ = self._run(lambda st: plan_acquire(st, unit, client_id, ttl_s, self._clock(), _nonce()),
                                max_age=0.0)
        return plan.lease if plan is not None and plan.lease is not None else None

    def renew(self, unit_keys: Iterable[str], client_id: str, ttl_s: float) -> None:
        keys = list(unit_keys)
        with self._lock:
            plan, _ = self._run(lambda st: plan_renew(st, keys, client_id, ttl_s, self._clock(), _nonce()),
                                max_age=math.inf)
        self._note_lost(plan)

    def release(self, unit_keys: Iterable[str], client_id: str) -> None:
        keys = list(unit_keys)
        with self._lock:
            self._run(lambda st: plan_release(st, keys, client_id), max_age=0.0)

    def unit_status(self, unit_keys: Iterable[str]) -> dict[str, UnitStatus]:
        state = self._current(self._max_age)
        now = self._clock()
        out = {}
        for key in unit_keys:
            lease = state.leases.get(key)
            out[key] = UnitStatus(done=key in state.done_units,
                                  lease=lease if lease is not None and not lease.expired(now) else None)
        return out

    def item_states(self, item_ids: Iterable[str]) -> dict[str, ItemState]:
        state = self._current(self._max_age)
        with self._buf_lock:
            buffered = list(self._failures)
        extra: dict[str, list[Failure]] = {}
        for f in buffered:
            extra.setdefault(f.item_id, []).append(f)
        out = {}
        for item_id in item_ids:
            tally = state.failures.get(item_id)
            mine = extra.get(item_id, [])
            if item_id not in state.published and tally is None and not mine:
                continue
            out[item_id] = ItemState(
                published=item_id in state.published,
                failed_permanently=bool(tally and tally.permanent) or any(not f.transient for f in mine),
                transient_failures=(tally.transient if tally else 0) + sum(f.transient for f in mine),
            )
        return out

    def record_failures(self, failures: list[Failure], client_id: str) -> None:
        """Failures ride on the next publish commit (or one commit at close): never a commit each."""
        with self._buf_lock:
            self._failures.extend(failures)

    def complete_followups(self, done: list[Followup]) -> None:
        """Completions ride on the next publish commit (or one commit at close)."""
        with self._buf_lock:
            self._followups_done.extend(done)

    def pending_followups(self, kind: str) -> list[Followup]:
        state = self._current(self._max_age)
        with self._buf_lock:
            done = {(f.kind, f.item_id) for f in self._followups_done}
        return [f for f in state.pending_followups if f.kind == kind and (f.kind, f.item_id) not in done]

    def publish(self, batch: Batch) -> PublishReceipt:
        """One commit: the batch's files, its index shard, ledger delta, done markers, renewals."""
        with self._buf_lock:
            failures, self._failures = self._failures, []
            done, self._followups_done = self._followups_done, []
        client = batch.client_id or self._client_id

        def build(state: HubState) -> Plan | None:
            inputs = PublishInputs(client_id=client, index_path=self.index_path, now=self._clock(),
                                   nonce=_nonce(), extra_failures=failures, followups_done=done,
                                   published_total=self._published_total,
                                   fanout_threshold=self._fanout_threshold)
            return plan_publish(state, batch, inputs)

        try:
            with self._lock:
                plan, state = self._run(build, max_age=math.inf)
        except BaseException:
            with self._buf_lock:  # nothing landed: keep them for the next commit
                self._failures[:0], self._followups_done[:0] = failures, done
            raise
        self._note_lost(plan)
        if plan is None or not (plan.adds or plan.deletes):
            return PublishReceipt(published_ids=[], commit="")
        self._published_total += len(plan.published_ids)
        self._count("published_items", len(plan.published_ids))
        if plan.skipped_ids:
            log.info("%d items were already published by another client", len(plan.skipped_ids))
        self._maybe_compact(state, client)
        return PublishReceipt(published_ids=list(plan.published_ids), commit=state.sha)

    def _note_lost(self, plan: Plan | None) -> None:
        if plan is not None and plan.lost:
            self._count("lease_lost", len(plan.lost))
            log.warning("leases taken over by another client: %s", ", ".join(plan.lost))

    # -- compaction ------------------------------------------------------------------------------

    def _maybe_compact(self, state: HubState, client: str) -> None:
        if self._auto_compact <= 0:
            return
        # A per-client offset spreads the clients, so usually one of them compacts at a time.
        offset = int.from_bytes(client.encode()[-2:] or b"\0", "big") % max(1, self._auto_compact // 4)
        if len(state.paths_of(SHARD)) < self._auto_compact + offset:
            return
        try:
            self.compact()
        except StoreError as exc:
            log.warning("automatic index compaction failed (the next publish retries): %s", exc)

    def compact(self) -> int:
        """Merge index shards into ``index_path`` and ledger deltas into the ledger, deleting the
        merged files, in one compare-and-swap commit. Returns the rows in the index."""

        def build(state: HubState) -> Plan | None:
            index_rows = []
            if self.index_path in state.entries:
                index_rows = decode_rows(self._reader.download(self.index_path, state.sha))
            shards = {p: decode_rows(self._reader.download(p, state.sha)) for p in state.paths_of(SHARD)}
            ledgers = {p: state.parsed[p] for p in state.paths_of("ledger", "batch")}
            return plan_compact(state, index_rows, shards, ledgers, self.index_path)

        with self._lock:
            plan, state = self._run(build, max_age=0.0)
        if plan is None:
            return len(state.published)
        log.info("compacted the index of %s: %d rows", self.repo_id, plan.rows)
        return plan.rows


def build_hub_store(settings: Any, repo_id: str) -> HubStore:
    """The CLI's hub store from parsed settings (token and endpoint as the client library reads them)."""
    token = settings.secret("hf_token") or None
    return HubStore(
        repo_id,
        repo_type=settings.hf_repo_type,
        private=not settings.hf_public,
        token=token,
        endpoint=getattr(settings, "hf_endpoint", None) or None,
        index_path=settings.hf_index_repo_path,
        commits_per_hour=settings.hf_commits_per_hour,
        auto_compact_shards=settings.hf_index_flush_every if settings.hf_write_index else 0,
        client_id=settings.client_id,
    )
