"""The Hub store's engine: reads the repo at known shas and commits by compare-and-swap.

Every write is one ``HfApi.create_commit`` whose ``parent_commit`` is the head the decision was
made at; the retry rules follow the Hub's behaviour (reference §6.3, see ``hub_retry``):

- 409 (another commit in progress): nothing was applied; wait with jitter, resend the same intent;
- 412 (the head moved): re-read the state at the new head, decide again, rebuild the operations;
- 429 (commit quota): pause every commit of this client for ``Retry-After`` (or the RateLimit
  header, or the message), then resend;
- 5xx, timeouts, lost connections: the outcome is unknown. Re-read the repo at its head and look
  for the attempt's unique file before deciding anything. An attempt that may still land cannot
  land twice: it names a parent that any later success supersedes.

Files on disk (item files, shards, Parquet index shards) are uploaded once per intent, before
the first commit attempt, with ``HfApi.preupload_lfs_files``: the server answers per file whether
it goes through LFS (then its bytes are sent now, to the storage host) or inline. The operation
objects of those files are kept and reused by every attempt of the intent, so a 412, 409, 429 or
unknown outcome never sends their bytes again (the client skips ops it already uploaded, and marks
an op committed only when a commit succeeded). An upload that fails is repeated like a read (it is
content-addressed: nothing can land twice) and costs no commit. The small coordination files held
in memory are built fresh for every attempt (the client mutates an op: its remote oid must be the
one at the parent being committed on). Nothing is reported as committed unless the server answered
with the new sha or a later head contains it.
Heads that go backwards (a lagging repo-info answer) are detected and re-read through the refs
endpoint. A ``CommitBudget`` keeps everything this client commits under its hourly budget, and
API calls are counted (and held under a 5-minute budget) for ``budget_report()``.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import net
from ..errors import CommitQuotaSpent, RateLimited, StoreError, TransientError
from . import hub_retry
from .commit_budget import CallCounter, CommitBudget, SlidingWindowLimit
from .hub_errors import repo_missing
from .hub_ops import Plan
from .hub_state import HubState, StateReader, classify

log = logging.getLogger(__name__)

MAX_CONFLICTS = 100  # 412s for one intent; each one means another client made progress
MAX_GONE = 8  # 404s for a path the plan deletes: re-read and rebuilt; more means the reads disagree with the repo
MAX_BUSY = 30  # 409s for one intent
MAX_UNKNOWN = 10  # unknown outcomes for one intent
# A budget wait longer than this is announced (a warning with the time it ends), and once the run is
# stopping no commit waits longer: it is not sent (``CommitQuotaSpent``), so a stop never waits an hour.
STOPPING_WAIT_S = 15.0
_COUNTERS = {hub_retry.CONFLICT: "conflict_412", hub_retry.BUSY: "busy_409", hub_retry.RATE: "rate_limited_429",
             hub_retry.UNKNOWN: "unknown_outcome", hub_retry.GONE: "gone_404"}


class HubSync:
    """State at a known head plus the commit loop, for one client of one repo.

    ``lock`` serialises this client's commits (they would only refuse each other); reads take
    ``_read_lock`` only, so they never wait behind a commit's network round trip or a quota pause.
    """

    def __init__(self, api: Any, repo_id: str, repo_type: str, index_path: str, *,
                 clock: Callable[[], float], sleep: Callable[[float], None], commits_per_hour: int,
                 api_calls_per_5min: int, warn_files: int, retry_base_s: float, max_rate_wait_s: float,
                 cache_dir: Path, own_cache: bool, rng: random.Random,
                 stopping: Callable[[], bool] = lambda: False) -> None:
        self.api, self.repo_id, self.repo_type, self.index_path = api, repo_id, repo_type, index_path
        self._clock, self._sleep, self._rng, self._stopping = clock, sleep, rng, stopping
        self._commits = CommitBudget(commits_per_hour, clock=clock)
        self._api_limit = SlidingWindowLimit(api_calls_per_5min, 300.0, clock)
        self._counter = CallCounter(clock)
        self._warn_files, self._warned_files = warn_files, 0
        self._retry_base, self._max_rate_wait = retry_base_s, max_rate_wait_s
        self._cache_dir, self._own_cache = cache_dir, own_cache
        self.reader = StateReader(api, repo_id, repo_type, index_path, cache_dir, self.count, clock)
        self.lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._state: HubState | None = None
        self._state_gen = 0
        self._fresh_at = -math.inf
        self._contention = 0.0  # moving average: did the head move under our last intents?
        self._superseded: set[str] = set()
        # Completes every plan before it is sent (the files layout's Parquet twins, ``hub_files_index``).
        self.finish_plan: Callable[[Plan, HubState], None] | None = None

    @property
    def state(self) -> HubState | None:
        """The last state read or committed (may be behind the head)."""
        return self._state

    def age(self) -> float:
        """Seconds since the state was last confirmed to be the head."""
        return self._clock() - self._fresh_at

    def close(self) -> None:
        if self._own_cache:
            shutil.rmtree(self._cache_dir, ignore_errors=True)

    # -- accounting ------------------------------------------------------------------------------

    def count(self, kind: str, n: int = 1) -> None:
        self._counter.add(kind, n)
        if kind == "api":
            for _ in range(n):
                self._api_limit.record()

    def wait(self, seconds: float, why: str) -> None:
        if seconds <= 0:
            return
        log.info("hub: waiting %.1fs (%s)", seconds, why)
        self._counter.add("waited_ms", int(seconds * 1000))
        self._sleep(seconds)

    def _wait_for_budget(self, plan: Plan) -> None:
        """Wait until the commit budget (and a 429's pause) allows the next commit. ``sleep`` returns
        early when the run is told to stop, and a stopping run does not wait long: it gives up."""
        announced = False
        while (seconds := max(self._commits.delay(), self._api_limit.delay())) > 0:
            if seconds > STOPPING_WAIT_S and self._stopping():
                raise CommitQuotaSpent(
                    f"hub commit quota: '{plan.title}' was not published (the run is stopping and the "
                    f"quota reopens in {seconds:.0f}s)", seconds)
            if seconds > STOPPING_WAIT_S and not announced:
                log.warning("hub commit quota: '%s' waits %.0fs for the quota to reopen; a stop (Ctrl+C, "
                            "SIGTERM, STOP) ends the run now, with exit 3", plan.title, seconds)
                announced = True
            self.wait(seconds, "commit budget")

    def landed_last_hour(self) -> tuple[float, ...]:
        """When this client's commits of the last hour landed (publish steps, leases, the card...)."""
        return self._counter.landed_last_hour()

    def budget_report(self) -> dict[str, Any]:
        """Commits last hour, API calls, and both per published item (metrics + final summary)."""
        report: dict[str, Any] = dict(self._counter.report(self._commits.count()))
        report["commits_per_hour_limit"] = self._commits.limit
        report["commit_pause_s"] = round(self._commits.paused_for(), 3)
        report["leases_lost"] = self._counter.totals["lease_lost"]
        report["lagged_head_reads"] = self._counter.totals["lagged_head"]
        report["lfs_uploads"] = self._counter.totals["lfs_uploads"]  # files sent to LFS (an upper bound)
        report["lfs_bytes"] = self._counter.totals["lfs_bytes"]
        return report

    # -- reads -----------------------------------------------------------------------------------

    def api_call(self, fn: Callable[[], Any], *, missing_ok: bool = False) -> Any:
        """One API call, retried (bounded, jittered) on 5xx / timeouts / 429 through ``net``.

        Refusals become ``StoreError`` (a missing repo is re-raised as is when ``missing_ok``), and
        so does a service that stays unreachable: callers of the store see one error type.
        """

        def once() -> Any:
            self.wait(self._api_limit.delay(), "API calls per 5 minutes")
            self.count("api")
            return fn()

        return self._read(once, f"a read of {self.repo_id}", attempts=6, missing_ok=missing_ok)

    def create_repo(self, private: bool) -> None:
        """Create the repo; one that exists already (another client made it a moment ago) is fine."""
        import json

        def create() -> None:
            try:
                self.api.create_repo(self.repo_id, repo_type=self.repo_type, private=private, exist_ok=True)
            except (KeyError, json.JSONDecodeError):
                # The client reads "url" from the answer even after a 409 "already exists", which the
                # protocol does not promise to carry; the read of the head that follows checks the repo.
                log.info("creating %s: the Hub's answer had no repo url (it exists already?)", self.repo_id)

        self.api_call(create)

    def _read_head(self) -> str:
        """The branch head, never one we know to be superseded (repo info can lag behind).

        When repo info names a sha we already saw superseded, the refs endpoint is asked too;
        if both keep naming it, it is believed after a few tries (a spurious refusal, not lag).
        """
        for attempt in range(1, 5):
            info = self.api_call(lambda: self.api.repo_info(self.repo_id, repo_type=self.repo_type))
            sha = str(info.sha)
            if sha not in self._superseded:
                return sha
            self.count("lagged_head")
            refs = self.api_call(lambda: self.api.list_repo_refs(self.repo_id, repo_type=self.repo_type))
            heads = [str(b.target_commit) for b in refs.branches if b.name == "main"]
            if heads and heads[0] not in self._superseded:
                return heads[0]
            if attempt < 4:
                self.wait(self._backoff(attempt), "the head read is behind a commit already seen")
        log.warning("the head of %s stays at %s after a refused commit; trusting it", self.repo_id, sha[:12])
        self._superseded.discard(sha)
        return sha

    def refresh(self) -> HubState:
        """Read the head and, if it moved, the coordination state at it."""
        with self._read_lock:
            gen = self._state_gen = self._state_gen + 1
            sha = self._read_head()
            current = self._state
            if current is not None and current.sha == sha:
                state = current
            else:
                state = self.read_at(sha, lambda: self.reader.read(sha))
            self._set_state(state, gen)
            return state

    def download(self, path: str, sha: str) -> bytes:
        """One file's bytes at ``sha`` (retried on transient failures)."""
        return self.read_at(sha, lambda: self.reader.download(path, sha))

    def read_at(self, sha: str, fn: Callable[[], Any]) -> Any:
        """Run a read pinned to ``sha``: 5xx, 429 and network failures are retried (bounded), other
        refusals become ``StoreError``."""
        return self._read(fn, f"reading {self.repo_id} at {sha[:12]}", attempts=4)

    def _read(self, fn: Callable[[], Any], what: str, *, attempts: int, missing_ok: bool = False) -> Any:
        """A read, safe to repeat: failures mapped by ``hub_retry.read_error``, repeated by ``net``."""
        from huggingface_hub.errors import RepositoryNotFoundError

        def once() -> Any:
            try:
                return fn()
            except hub_retry.failure_types() as exc:
                if missing_ok and repo_missing(exc):
                    if isinstance(exc, RepositoryNotFoundError):
                        raise
                    raise RepositoryNotFoundError(str(exc), response=exc.response) from exc  # type: ignore[union-attr]
                raise hub_retry.read_error(exc, what, self.repo_id, self._clock()) from None

        try:
            return net.call_with_retries(once, attempts=attempts, base_s=self._retry_base, max_s=30.0,
                                         sleep=self._sleep, retry_on=(TransientError, RateLimited), rng=self._rng)
        except (TransientError, RateLimited) as exc:
            raise StoreError(f"hub unreachable for {self.repo_id}: {exc}") from None

    def _set_state(self, state: HubState, gen: int) -> None:
        if gen >= self._state_gen or self._state is None:
            self._state, self._state_gen = state, gen
        self._fresh_at = self._clock()
        self._check_shape(state)

    def current(self, max_age: float) -> HubState:
        state = self._state
        if state is None or max_age <= 0 or self._clock() - self._fresh_at > max_age:
            return self.refresh()
        return state

    def _check_shape(self, state: HubState) -> None:
        files = state.file_count
        if files >= self._warn_files and (not self._warned_files or files >= self._warned_files + 5000):
            self._warned_files = files
            log.warning("repo %s holds about %d files; the Hub recommends under 100k per repo: "
                        "compact the index and consider a new repo or a sharded layout", self.repo_id, files)

    # -- the commit loop -------------------------------------------------------------------------

    def upload(self, plan: Plan, uploads: dict[str, _Upload]) -> None:
        """Upload the plan's files on disk that ``uploads`` (this intent's) does not hold yet.

        One ``preupload_lfs_files`` call: preupload chunks of 256 files, then for the ``lfs`` ones
        the LFS batch API (chunks of 256), one storage PUT and one verify each. Counted as API calls
        as if every LFS object needed its bytes sent (an upper bound: objects the repo already holds
        skip the PUT and the verify), the PUTs as ``lfs_uploads``.
        """
        from huggingface_hub import CommitOperationAdd

        fresh: list[_Upload] = []
        for path, content in plan.adds.items():
            if isinstance(content, bytes):
                continue
            key = _source_key(content)
            known = uploads.get(path)
            if known is None or known.source != key:
                op = CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(content))
                uploads[path] = _Upload(key, op)
                fresh.append(uploads[path])
        if not fresh:
            return
        ops = [u.op for u in fresh]

        def once() -> None:
            self.wait(self._api_limit.delay(), "API calls per 5 minutes")
            self.count("api", math.ceil(len(ops) / 256))  # preupload chunks
            try:
                self.api.preupload_lfs_files(self.repo_id, ops, repo_type=self.repo_type, free_memory=False)
            except RuntimeError as exc:  # the client wraps a failed LFS transfer; its cause says what failed
                if isinstance(exc.__cause__, hub_retry.failure_types()):
                    raise exc.__cause__ from None
                raise

        try:
            self._read(once, f"an upload of {len(ops)} files to {self.repo_id}", attempts=6)
        except StoreError as exc:
            if not _xet_in_use():
                raise
            raise StoreError(f"{exc} (uploads go through Xet storage because hf_xet is installed; a Hub "
                             "endpoint without Xet needs HF_HUB_DISABLE_XET=1)") from None
        # Which files the server sent through LFS: the client keeps it on the op (no public field).
        lfs = sum(1 for op in ops if op._upload_mode == "lfs")
        if lfs:
            self.count("api", math.ceil(lfs / 256) + lfs)  # LFS batch chunks + one verify per object
            self.count("lfs_uploads", lfs)
            self.count("lfs_bytes", sum(op.upload_info.size for op in ops if op._upload_mode == "lfs"))

    def _send(self, plan: Plan, parent: str, uploads: dict[str, _Upload]) -> str:
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        # Files on disk: this intent's uploaded ops, reused. In-memory files: fresh ops every attempt,
        # since the client mutates an op (upload mode, the remote oid it compares to skip no-ops).
        ops: list[Any] = [
            uploads[p].op if not isinstance(c, bytes) else CommitOperationAdd(path_in_repo=p, path_or_fileobj=c)
            for p, c in plan.adds.items()
        ]
        ops += [CommitOperationDelete(path_in_repo=p) for p in plan.deletes]
        inline = sum(1 for c in plan.adds.values() if isinstance(c, bytes))
        self._commits.record()
        self.count("commit")
        self.count("api", 1 + math.ceil(inline / 256))  # preupload chunks of the in-memory files + the commit
        try:
            info = self.api.create_commit(self.repo_id, ops, commit_message=plan.title,
                                          repo_type=self.repo_type, parent_commit=parent)
        finally:  # the modes are set by the client's preupload, before the commit itself may fail
            plan.note_lfs(op.path_in_repo for op in ops
                          if isinstance(op, CommitOperationAdd) and op._upload_mode == "lfs")
        if not info.oid or info.oid == parent:
            raise StoreError(f"commit '{plan.title}' was skipped by the client as a no-op")
        return info.oid

    def _backoff(self, attempt: int) -> float:
        return hub_retry.backoff_s(attempt, self._retry_base, self._rng)

    def run(self, build: Callable[[HubState], Plan | None], *, max_age: float) -> tuple[Plan | None, HubState]:
        """Decide at a state, commit with that state as parent, and follow the retry rules.

        Alone on a repo, the state left by our own last commit is usually still the head, so we
        commit on it directly (2 API calls). When other clients keep moving the head, reading the
        head first is cheaper than a refused attempt.
        """
        cached = self._state
        pre_read = self._contention >= 0.5 and max_age > 0
        state = self.current(0.0 if pre_read else max_age)
        if pre_read and cached is not None:
            self._note_contention(state.sha != cached.sha)
        intent = _Intent(pre_read)
        uploads: dict[str, _Upload] = {}
        plan: Plan | None = None
        while True:
            for earlier in intent.unresolved:
                if earlier.landed(state):
                    self.count("commit_landed")
                    return earlier, state
            if plan is None:
                plan = build(state)
                if plan is None or not (plan.adds or plan.deletes):
                    return plan, state
                if self.finish_plan is not None:
                    self.finish_plan(plan, state)
            self.upload(plan, uploads)  # before the commit budget is waited for: uploads cost no commit
            self._wait_for_budget(plan)
            try:
                sha = self._send(plan, state.sha, uploads)
            except (*hub_retry.failure_types(), ValueError) as exc:  # the rest is a bug: it propagates
                if self._after_failure(exc, plan, state.sha, intent):
                    state, plan = self.refresh(), None
                continue
            return plan, self._landed(plan, state, sha, intent)

    def run_decided(self, build: Callable[[HubState], tuple[Plan, Any] | None]) -> tuple[Any, HubState]:
        """``run`` under the lock at the head, for a ``build`` that says what its plan means: the
        meaning of the plan that landed (None when nothing was left to do), and the state after."""
        decided: list[tuple[Plan, Any]] = []

        def plan_of(state: HubState) -> Plan | None:
            out = build(state)
            if out is None:
                return None
            decided.append(out)
            return out[0]

        with self.lock:
            plan, state = self.run(plan_of, max_age=0.0)
        return next((meaning for p, meaning in decided if p is plan), None), state

    def _after_failure(self, exc: Exception, plan: Plan, parent: str, intent: _Intent) -> bool:
        """Wait as the failure asks; True when the state must be re-read and the plan rebuilt."""
        outcome, wait = hub_retry.classify(exc, self._clock(), intent.tries[hub_retry.RATE])
        tries = intent.tries
        tries[outcome] += 1
        self.count(_COUNTERS[outcome])
        log.info("hub commit '%s' -> %s (attempt %d)", plan.title, outcome, tries[outcome])
        if outcome == hub_retry.RATE:
            intent.rate_waited += wait
            if intent.rate_waited > self._max_rate_wait:
                raise StoreError(f"hub commit quota: waited {intent.rate_waited:.0f}s, giving up; "
                                 f"'{plan.title}' was not published") from None
            self._commits.pause(wait)  # the same intent is resent once the budget allows
            return False
        if outcome == hub_retry.BUSY:
            self._give_up_after(tries[outcome], MAX_BUSY, plan, "409s; it was not published")
            self.wait(self._backoff(tries[outcome]), "another commit in progress (409)")
            return False
        if outcome == hub_retry.GONE:
            # A later commit removed a path this plan deletes and the Hub said so before checking the
            # parent: the plan is stale like after a 412, but the parent is not known to be superseded.
            self._give_up_after(tries[outcome], MAX_GONE, plan, "404s for paths it deletes; it was not published")
            self.wait(self._backoff(tries[outcome]), "a path the commit deletes is gone (404)")
            return True
        if outcome == hub_retry.UNKNOWN:
            self._give_up_after(tries[outcome], MAX_UNKNOWN, plan, "unknown outcomes; it may have landed")
            intent.unresolved.append(plan)
            self._commits.pause(wait)
            self.wait(self._backoff(tries[outcome]), "unknown commit outcome")
            return True  # the parent may still be the head: it is not marked superseded
        if not intent.pre_read and tries[outcome] == 1:
            self._note_contention(True)
        self._give_up_after(tries[outcome], MAX_CONFLICTS, plan, "412s; it was not published")
        self._superseded.add(parent)
        return True

    def _landed(self, plan: Plan, parent: HubState, sha: str, intent: _Intent) -> HubState:
        """Our commit ``sha`` on ``parent``: the new state is known without reading it back."""
        self._superseded.add(parent.sha)
        if not intent.pre_read and not intent.tries[hub_retry.CONFLICT]:
            self._note_contention(False)
        self.count("commit_landed")
        for path, (oid, content) in plan.known.items():
            self.reader.remember(classify(path, self.index_path), oid, content)
        state = parent.with_commit(sha, plan.known, plan.deletes, self._clock())
        with self._read_lock:
            self._state_gen += 1
            self._set_state(state, self._state_gen)
        return state

    def _note_contention(self, head_moved: bool) -> None:
        """Whether the head had moved under our last intent (a moving average over intents)."""
        self._contention = 0.7 * self._contention + (0.3 if head_moved else 0.0)

    def _give_up_after(self, tries: int, limit: int, plan: Plan, what: str) -> None:
        if tries > limit:
            raise StoreError(f"hub commit '{plan.title}' abandoned after {tries} {what}")


def _xet_in_use() -> bool:
    """Whether the client sends big files through Xet storage instead of git-LFS (its own rule)."""
    import importlib.util

    from huggingface_hub import constants

    return importlib.util.find_spec("hf_xet") is not None and not constants.HF_HUB_DISABLE_XET


def _source_key(path: Path) -> tuple[str, int, int]:
    """What identifies a local file's content for reuse of its uploaded op: path, size, mtime."""
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


@dataclass
class _Upload:
    """One file of an intent, uploaded: its op is reused by every commit attempt of the intent."""

    source: tuple[str, int, int]
    op: Any  # huggingface_hub.CommitOperationAdd, already through preupload_lfs_files


@dataclass
class _Intent:
    """Book-keeping for one intent across its attempts."""

    pre_read: bool
    tries: Counter[str] = field(default_factory=Counter)
    unresolved: list[Plan] = field(default_factory=list)
    rate_waited: float = 0.0
