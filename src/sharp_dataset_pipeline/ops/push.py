"""``push``: a local store in the sharded layout onto a Hub store, in bounded, resumable commits.

The plan (``plan_push``, pure) is made from what the target holds now: the local rows grouped by
the shards they share (``transfer_plan.push_steps``, whole groups of at most ``step_files`` tars
and about ``step_bytes``), groups the target already has left out. Each step is one commit
(``stores.hub_push``); the local units done are carried over as done markers, each in the commit
that lands the last of its rows (units with nothing left to push: in the last commits, at most
``COMMIT_FILES`` markers each). A kill at any point loses nothing and duplicates nothing: a rerun
plans again from the target, where every step that landed is found by its rows.

The plan holds each row only as a ``RowRef`` (id, unit, shard paths, size: about 0.2 KB, against
about 4.5 KB for a full row, ``benchmarks/bench_push_plan.py``); each commit reads its own rows
from the source when it is made, so the memory of a push grows with the number of rows only by
that much.

At the end the target's index shards are compacted (one more commit, which also refreshes the
dataset card for the pushed rows' sources and predictors), unless asked not to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import ConfigError
from ..ledger.status import FailedItem
from ..publish.layout_choice import SHARDS
from ..publish.transfer_plan import DEFAULT_STEP_BYTES, DEFAULT_STEP_FILES, RowRef, push_steps
from ..stores.hub_push import HubPushTarget, PushCommit, PushOutcome
from ..stores.local_export import LocalDataset

COMMIT_FILES = 80  # files one push commit carries at most: the Hub asks for about 50-100 per commit
_STEP_OVERHEAD = 3  # besides the tars: the JSONL index shard, the Parquet index shard, the progress file


@dataclass(frozen=True)
class PushOptions:
    step_files: int = DEFAULT_STEP_FILES
    step_bytes: int = DEFAULT_STEP_BYTES
    compact: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.step_files <= COMMIT_FILES - _STEP_OVERHEAD:
            raise ConfigError(f"push: --step-files must be 1..{COMMIT_FILES - _STEP_OVERHEAD}, got {self.step_files}")
        if self.step_bytes < 1:
            raise ConfigError(f"push: --step-bytes must be positive, got {self.step_bytes}")


@dataclass
class PushReport:
    """What a push did, for the one-screen summary."""

    source: str
    target: str
    commits_planned: int = 0
    commits_landed: int = 0
    published: int = 0
    already_there: int = 0  # rows the target had (an earlier push, a run, a removal)
    units_done: int = 0
    removed: int = 0  # local removals recorded at the target
    failures: int = 0  # local failure records carried over (ids the target had no failure for)
    removed_published: tuple[str, ...] = ()  # removed locally, but published at the target (by a run)
    shards: int = 0
    tar_bytes: int = 0
    index_rows: int | None = None  # rows in the target's index after compaction (None: not compacted)
    budget: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        lines = [f"pushed {self.source} -> {self.target}: {self.published} items in {self.shards} shards "
                 f"({self.tar_bytes / 1e6:.1f} MB), {self.units_done} units marked done, "
                 f"{self.commits_landed} commits; {self.already_there} items were at the target already"]
        if self.removed:
            lines.append(f"{self.removed} local removals recorded at the target (never published there)")
        if self.failures:
            lines.append(f"{self.failures} local failure record{'s' if self.failures != 1 else ''} carried over "
                         "(`sharp-dataset failures` lists them there; a run there skips what failed for good, as here)")
        if self.removed_published:
            ids = " ".join(self.removed_published[:20]) + (" …" if len(self.removed_published) > 20 else "")
            lines.append(f"{len(self.removed_published)} items removed locally are published at the target: take "
                         f"them down there with `sharp-dataset remove --store {self.target} {ids}`")
        if self.index_rows is not None:
            lines.append(f"index compacted: {self.index_rows} rows")
        if self.budget:
            lines.append(f"hub: {self.budget.get('commits', 0)} commit attempts, "
                         f"{self.budget.get('api_calls', 0)} API calls, "
                         f"waited {self.budget.get('waited_s', 0)}s for budgets and retries")
        return "\n".join(lines)


class PushProgress(Protocol):
    """Where a push reports how far it is (a live display, plain lines, or nothing)."""

    def planned(self, commits: int, items: int, size: int) -> None: ...

    def landed(self, outcome: PushOutcome) -> None: ...


class NoProgress:
    def planned(self, commits: int, items: int, size: int) -> None:
        return None

    def landed(self, outcome: PushOutcome) -> None:
        return None


def _units_by_last_step(steps: Sequence[tuple[tuple[str, ...], tuple[RowRef, ...]]]) -> dict[str, int]:
    last: dict[str, int] = {}
    for i, (_, rows) in enumerate(steps):
        for row in rows:
            last[row.unit] = i
    return last


def _marker_commits(units: list[str], first_room: int) -> list[PushCommit]:
    """Commits of done markers alone: the progress file rides on each; the first has ``first_room``."""
    out: list[PushCommit] = []
    while units:
        take = first_room if not out else COMMIT_FILES - 1
        out.append(PushCommit((), (), tuple(units[:take])))
        units = units[take:]
    return out


def plan_push(refs: Iterable[RowRef], units_done: Iterable[str], have: set[str] | frozenset[str],
              done_there: set[str] | frozenset[str], options: PushOptions,
              removed: Iterable[tuple[str, str]] = (), failures: Iterable[FailedItem] = ()) -> list[PushCommit]:
    """The commits still to make, in order. Pure.

    ``refs``: the source's rows as ``RowRef`` (the full rows are read a step at a time, by the target).
    ``have``: ids the target has (published or removed); ``done_there``: units done at the target.
    A unit goes in the commit that lands its last row, when that commit has room; otherwise (and for
    units with no row left to push) in the trailing commits of done markers alone. The local
    removals (``(id, reason)``) and failure records of ids the target lacks ride on the first commit
    (one file each), so no later commit of the push can publish a removed item, and a later run
    there skips what failed for good here as it would here."""
    gone = tuple((i, why) for i, why in dict(removed).items() if i not in have)
    failed = tuple(f for f in failures if f.item_id not in have)
    extra = bool(gone) + bool(failed)  # the files those two add to the first commit
    steps = [(s.shards, s.rows) for s in push_steps(refs, set(have), max_files=options.step_files,
                                                     max_bytes=options.step_bytes)]
    last = _units_by_last_step(steps)
    attached: list[list[str]] = [[] for _ in steps]
    rest: list[str] = []
    for unit in dict.fromkeys(units_done):
        if unit in done_there:
            continue
        i = last.get(unit)
        room = COMMIT_FILES - (extra if i == 0 else 0)
        if i is not None and len(steps[i][0]) + _STEP_OVERHEAD + len(attached[i]) < room:
            attached[i].append(unit)
        else:
            rest.append(unit)
    out = [PushCommit(shards, step_rows, tuple(units)) for (shards, step_rows), units in zip(steps, attached,
                                                                                              strict=True)]
    out += _marker_commits(rest, COMMIT_FILES - 1 - (0 if out else extra))
    if gone or failed:
        first = out[0] if out else PushCommit((), ())
        out[:1] = [dataclasses.replace(first, removed=gone, failures=failed)]
    return out


def check_source(source: LocalDataset) -> None:
    """``ConfigError`` unless the local store is in the sharded layout (push sends its tars as they are)."""
    if source.layout != SHARDS:
        raise ConfigError(f"push: local:{source.root} is in the {source.layout} layout; push sends shards as they "
                          f"are: convert it first with `sharp-dataset migrate --to shards --store local:{source.root}`")


def push_dataset(source: LocalDataset, target: HubPushTarget, options: PushOptions, *, target_name: str,
                 compact: Callable[[], int] | None = None, progress: PushProgress | None = None) -> PushReport:
    """Push ``source`` (a local sharded store) onto ``target`` (an opened, sharded Hub store)."""
    check_source(source)
    progress = progress or NoProgress()
    held = target.holdings()
    have = held.has
    commits = plan_push(source.refs, source.units_done, have, held.units_done, options, source.removed,
                        source.failures)
    report = PushReport(f"local:{source.root}", target_name, commits_planned=len(commits))
    report.removed_published = tuple(sorted(i for i, _ in source.removed if i in held.published - held.removed))
    report.already_there = sum(1 for r in source.refs if r.shards and r.id in have)
    tars = [source.file(p) for c in commits for p in c.shards]
    size = sum(t.stat().st_size for t in tars if t.is_file())
    progress.planned(len(commits), sum(len(c.rows) for c in commits), size)
    for step in commits:
        outcome = target.commit(step)
        if outcome.commit:
            report.commits_landed += 1
        report.published += len(outcome.published)
        report.already_there += len(outcome.skipped)
        report.units_done += len(outcome.units_done)
        report.removed += len(outcome.removed)
        report.failures += len(outcome.failures)
        report.shards += len(outcome.shards)
        report.tar_bytes += outcome.tar_bytes
        progress.landed(outcome)
    if options.compact and compact is not None:
        report.index_rows = compact()
    report.budget = dict(target.budget_report())
    return report
