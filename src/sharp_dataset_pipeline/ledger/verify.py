"""``verify``: is the published dataset consistent? The checks are pure.

A store describes itself as a ``StoreView`` (its index files, a listing of its files with
sizes, its leases, and, where it keeps one apart from the index files, its ledger of
published rows); ``find_problems`` compares them and returns every inconsistency as a
``Problem``. A problem is ``fixable`` when repairing it loses nothing: deleting a file no row
points at, dropping a lease that is expired or malformed, or regenerating an index file from
the ledger (the authority). Missing or altered item files are reported, never "fixed".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import StoreError
from ..publish.index import row_file_refs, row_from_json
from ..records import IndexRow, Lease
from .shard_checks import ShardLister, ShardOpener, index_field_problems, index_id_problems, shard_problems

# kind → (fixable, one-line meaning)
KINDS: dict[str, tuple[bool, str]] = {
    "missing_file": (False, "an index row points at a file that does not exist"),
    "size_mismatch": (False, "a file's size differs from the size its row records"),
    "hash_mismatch": (False, "a file's SHA-256 differs from the hash its row records"),
    "orphan_file": (True, "a file that no published row points at"),
    "duplicate_row": (True, "an item id appears more than once in the index files"),
    "bad_row": (True, "an index line that is not a valid row"),
    "unrecorded_row": (True, "an index row the ledger does not hold as published (or removed)"),
    "missing_row": (True, "a published item whose row is in no index file"),
    "unrecorded_index_file": (True, "an index shard the ledger does not know"),
    "missing_index_file": (True, "an index shard the ledger has committed but that is missing"),
    "shard_count": (True, "a publish step's recorded row count differs from its rows in the ledger"),
    "missing_member": (False, "a row's shard member is not in its shard (shard missing or too short)"),
    "member_mismatch": (False, "a shard member's bytes, place or size differ from its row (deep)"),
    "index_mismatch": (False, "the Parquet index and the JSONL rows hold different ids or share fields"),
    "expired_lease": (True, "a lease past its expiry (its unit can be taken over)"),
    "bad_lease": (True, "a lease that is malformed (no owner, bad times)"),
    "lease_on_done_unit": (True, "a lease on a unit that is already done"),
}


_REGENERATE = "regenerate index file {target} from the ledger"
_LEASE = "delete the lease on unit {target}"
# What ``--fix`` does about each fixable kind (``--fix --dry-run`` lists these).
FIX_ACTIONS: dict[str, str] = {
    "orphan_file": "delete {target}",
    "duplicate_row": _REGENERATE, "bad_row": _REGENERATE, "unrecorded_row": _REGENERATE,
    "missing_row": _REGENERATE, "unrecorded_index_file": _REGENERATE, "missing_index_file": _REGENERATE,
    "shard_count": "recount the rows of publish step {target} in the ledger",
    "expired_lease": _LEASE, "bad_lease": _LEASE, "lease_on_done_unit": _LEASE,
}
_TAKE_DOWN = "or take the item down with `sharp-dataset remove {subject}` (its id is then excluded for good)"
# What a problem ``--fix`` cannot repair needs from a person.
NEEDS: dict[str, str] = {
    "missing_member": "restore {target} (e.g. from a backup), " + _TAKE_DOWN,
    "member_mismatch": "{target} changed after it was published: restore it, " + _TAKE_DOWN,
    "index_mismatch": ("share fields, or any difference in a files-layout dataset (its Parquet index is made from "
                       "the JSONL rows): `sharp-dataset compact` brings the Parquet index in line (on the Hub, once it "
                       "has index shards to merge: it rewrites the JSONL file and its twin); "
                       "ids in a sharded dataset: the index files were changed outside the tool (restore them from "
                       "a backup)"),
    "missing_file": "restore {target} (e.g. from a backup or the run folder that made it), " + _TAKE_DOWN,
    "size_mismatch": "{target} changed after it was published: restore the original bytes, " + _TAKE_DOWN,
    "hash_mismatch": "{target} changed after it was published: restore the original bytes, " + _TAKE_DOWN,
    # Where a store's --fix does not regenerate index files (the hub store):
    "duplicate_row": "`sharp-dataset compact` (it keeps the first row of each id)",
    "bad_row": "a person to correct or delete that line of {target} (this store cannot regenerate index files)",
}
_NEEDS_DEFAULT = "a person to look at it: this store's --fix does not repair {kind}"


@dataclass(frozen=True)
class Problem:
    """One inconsistency. ``target`` is what a fix acts on: a path, an index file name or a unit."""

    kind: str
    subject: str
    detail: str
    target: str = ""

    @property
    def fixable(self) -> bool:
        return KINDS[self.kind][0]

    def line(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}" + ("" if self.fixable else " (not fixable)")

    def fix_action(self) -> str:
        """What ``--fix`` does about it ("" for a kind it never repairs)."""
        return FIX_ACTIONS.get(self.kind, "").format(target=self.target, subject=self.subject)

    def needs(self) -> str:
        """What it takes to repair when ``--fix`` cannot."""
        return NEEDS.get(self.kind, _NEEDS_DEFAULT).format(target=self.target, subject=self.subject,
                                                           kind=self.kind)


@dataclass
class StoreView:
    """What ``find_problems`` needs to know about a store, read once.

    ``index_files``: index file name → content (the compacted index and every shard).
    ``listing``: repo path → size of every item-area file (not the index folder, the card or
    ``.coord/``). ``ledger_rows``/``expected_file``/``known_index_files`` come from a ledger
    kept apart from the index files (local store); ``None`` where the index files are the
    ledger, in which case the rows found in them are taken as published. ``ledger_problems``
    are inconsistencies the store found inside its ledger (reported as they are).
    """

    description: str
    index_files: dict[str, bytes]
    listing: dict[str, int]
    leases: list[Lease] = field(default_factory=list)
    done_units: set[str] = field(default_factory=set)
    ledger_rows: dict[str, IndexRow] | None = None
    expected_file: dict[str, str] | None = None
    known_index_files: set[str] | None = None
    ledger_problems: list[Problem] = field(default_factory=list)  # found by the store in its own books
    parquet_ids: set[str] | None = None  # ids in the Parquet index (shards layout); None: not checked
    parquet_fields: dict[str, dict[str, str]] | None = None  # id → share fields the Parquet index shows
    # Old files an unfinished ``migrate`` still deletes (paths, or folders ending in ``/``): not orphans.
    awaiting_deletion: frozenset[str] = frozenset()


@dataclass
class VerifyReport:
    store: str
    deep: bool
    rows: int = 0
    files: int = 0
    leases: int = 0
    problems: list[Problem] = field(default_factory=list)
    members: int = 0  # shard members the rows name (sharded layout), each checked in its tar
    awaiting_deletion: int = 0  # files of migrated items that the next ``migrate`` step deletes
    fixed: list[Problem] = field(default_factory=list)
    # Kinds this store's --fix repairs (None: every fixable kind); the hub store repairs fewer.
    repairs: frozenset[str] | None = None
    # ``verify --fix --dry-run``: list what --fix would do, change nothing.
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.problems

    def repairable(self, p: Problem) -> bool:
        """Whether this store's ``--fix`` repairs ``p``."""
        return p.fixable and (self.repairs is None or p.kind in self.repairs)

    def _lines(self, p: Problem) -> list[str]:
        mark = "" if self.repairable(p) else " (not fixable)"
        out = [f"  {p.kind}: {p.subject}: {p.detail}{mark}"]
        if not self.repairable(p):
            out.append(f"    needs: {p.needs()}")
        elif self.dry_run:
            out.append(f"    --fix would {p.fix_action()}")
        return out

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.problems:
            out[p.kind] = out.get(p.kind, 0) + 1
        return dict(sorted(out.items()))

    def to_json(self) -> dict[str, Any]:
        return {"store": self.store, "ok": self.ok, "deep": self.deep, "rows": self.rows, "files": self.files,
                "members": self.members, "leases": self.leases, "awaiting_deletion": self.awaiting_deletion,
                "counts": self.counts(),
                "problems": [asdict(p) | {"fixable": self.repairable(p),
                                          "fix": p.fix_action() if self.repairable(p) else "",
                                          "needs": "" if self.repairable(p) else p.needs()}
                             for p in self.problems],
                "fixed": [asdict(p) for p in self.fixed], "dry_run": self.dry_run}

    def text(self, limit: int = 200) -> str:
        members = f"{self.members} shard members, " if self.members else ""
        head = (f"{self.store}: {self.rows} rows, {self.files} files, {members}{self.leases} leases checked"
                f"{' (with hashes)' if self.deep else ''}")
        lines = [head]
        if self.fixed:
            lines.append(f"fixed {len(self.fixed)} problems:")
            lines += [f"  {p.line()}" for p in self.fixed[:limit]]
        if self.awaiting_deletion:
            lines.append(f"{self.awaiting_deletion} old files of migrated items wait for the next "
                         "`sharp-dataset migrate --to shards`, which deletes them (not a problem)")
        if self.ok:
            lines.append("consistent: no problems found")
            return "\n".join(lines)
        counts = ", ".join(f"{k} {v}" for k, v in self.counts().items())
        lines.append(f"{len(self.problems)} problems ({counts}):")
        for p in self.problems[:limit]:
            lines += self._lines(p)
        if len(self.problems) > limit:
            lines.append(f"  ... and {len(self.problems) - limit} more (use --json for all)")
        todo = sum(self.repairable(p) for p in self.problems)
        if self.dry_run:
            lines.append(f"dry run: --fix would repair {todo} of them; nothing was changed")
        elif todo:
            lines.append("run with --fix to repair the fixable ones (--fix --dry-run lists what it would do)")
        return "\n".join(lines)


def parse_index_files(files: dict[str, bytes]) -> tuple[dict[str, list[tuple[str, IndexRow]]], list[Problem]]:
    """Rows of every index file, by id (``(file, row)`` per occurrence), and malformed lines."""
    found: dict[str, list[tuple[str, IndexRow]]] = {}
    problems = []
    for name in sorted(files):
        try:
            text = files[name].decode("utf-8")
        except UnicodeDecodeError:
            problems.append(Problem("bad_row", name, "file is not UTF-8", name))
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = row_from_json(line)
            except (ValueError, StoreError, TypeError) as exc:
                problems.append(Problem("bad_row", f"{name}:{number}", str(exc)[:200], name))
                continue
            found.setdefault(row.id, []).append((name, row))
    return found, problems


def _index_problems(view: StoreView, found: dict[str, list[tuple[str, IndexRow]]]) -> list[Problem]:
    problems = []
    for item_id, places in sorted(found.items()):
        if len(places) > 1:
            where = ", ".join(name for name, _ in places)
            for name in sorted({name for name, _ in places}):
                problems.append(Problem("duplicate_row", item_id, f"{len(places)} rows in {where}", name))
    if view.ledger_rows is None or view.expected_file is None:
        return problems
    for item_id, places in sorted(found.items()):
        if item_id not in view.ledger_rows:
            for name in sorted({name for name, _ in places}):
                problems.append(Problem("unrecorded_row", item_id, f"in {name}, not published per the ledger",
                                        name))
    for item_id in sorted(view.ledger_rows):
        want = view.expected_file.get(item_id, "")
        if want and not any(name == want for name, _ in found.get(item_id, [])):
            problems.append(Problem("missing_row", item_id, f"its row is missing from {want}", want))
    if view.known_index_files is not None:
        for name in sorted(set(view.index_files) - view.known_index_files):
            problems.append(Problem("unrecorded_index_file", name, "not recorded in the ledger", name))
        for name in sorted(view.known_index_files - set(view.index_files)):
            problems.append(Problem("missing_index_file", name, "committed in the ledger, file missing", name))
    return problems


def awaits_deletion(path: str, awaiting: frozenset[str]) -> bool:
    """Whether ``path`` is listed in ``awaiting`` itself or lies in a folder (``…/``) listed there."""
    if path in awaiting:
        return True
    parts = path.split("/")
    return any("/".join(parts[:n]) + "/" in awaiting for n in range(1, len(parts)))


def _file_problems(rows: dict[str, IndexRow], listing: dict[str, int],
                   hasher: Callable[[str], str] | None) -> tuple[list[Problem], set[str]]:
    problems = []
    referenced: set[str] = set()
    for item_id in sorted(rows):
        for ref in row_file_refs(rows[item_id]):
            referenced.add(ref.path)
            size = listing.get(ref.path)
            if size is None:
                problems.append(Problem("missing_file", item_id, ref.path, ref.path))
            elif ref.size >= 0 and size != ref.size:
                problems.append(Problem("size_mismatch", item_id, f"{ref.path}: {size} bytes, row says {ref.size}",
                                        ref.path))
            elif hasher is not None and ref.sha256 and hasher(ref.path) != ref.sha256:
                problems.append(Problem("hash_mismatch", item_id, f"{ref.path}: content differs from its row",
                                        ref.path))
    orphans = [Problem("orphan_file", path, f"{size} bytes, no row points at it", path)
               for path, size in sorted(listing.items()) if path not in referenced]
    return problems + orphans, referenced


def lease_problems(leases: list[Lease], done_units: set[str], now: float) -> list[Problem]:
    """Malformed leases, expired ones, and leases on units already done."""
    problems = []
    for le in sorted(leases, key=lambda x: x.unit):
        times_ok = all(isinstance(t, (int, float)) and math.isfinite(t) for t in (le.acquired_at, le.expires_at))
        if not le.owner or not le.unit or not times_ok or le.expires_at < le.acquired_at:
            problems.append(Problem("bad_lease", le.unit, f"owner {le.owner!r}, acquired {le.acquired_at!r}, "
                                    f"expires {le.expires_at!r}", le.unit))
        elif le.unit in done_units:
            problems.append(Problem("lease_on_done_unit", le.unit, f"held by {le.owner}", le.unit))
        elif le.expired(now):
            problems.append(Problem("expired_lease", le.unit,
                                    f"held by {le.owner}, expired {now - le.expires_at:.0f}s ago", le.unit))
    return problems


def find_problems(view: StoreView, now: float, hasher: Callable[[str], str] | None = None,
                  opener: ShardOpener | None = None, lister: ShardLister | None = None) -> VerifyReport:
    """Every inconsistency of ``view`` at ``now``; ``hasher(path)`` (SHA-256 hex) enables deep checks of
    files, ``opener(shard path)`` (a readable stream) those of every shard member; without ``opener``,
    ``lister(shard path)`` (its member listing) checks that every member is in its tar. Files no row
    names that ``view.awaiting_deletion`` lists are counted apart, not reported as orphans."""
    found, problems = parse_index_files(view.index_files)
    problems += _index_problems(view, found)
    if view.ledger_rows is not None:
        rows = view.ledger_rows
    else:
        rows = {item_id: places[0][1] for item_id, places in found.items()}
    shard_found, shards, members = shard_problems(rows, view.listing, opener, lister)
    file_problems, referenced = _file_problems(rows, {p: s for p, s in view.listing.items() if p not in shards},
                                               hasher)
    awaiting = {p for p in view.listing if p not in referenced and p not in shards
                and awaits_deletion(p, view.awaiting_deletion)} if view.awaiting_deletion else set()
    file_problems = [p for p in file_problems if not (p.kind == "orphan_file" and p.target in awaiting)]
    problems += file_problems + [Problem(*f) for f in shard_found]
    if view.parquet_ids is not None:
        problems += [Problem(*f) for f in index_id_problems(set(rows), view.parquet_ids)]
    if view.parquet_fields is not None:
        problems += [Problem(*f) for f in index_field_problems(rows, view.parquet_fields)]
    problems += lease_problems(view.leases, view.done_units, now)
    problems += view.ledger_problems
    return VerifyReport(store=view.description, deep=hasher is not None, rows=len(rows),
                        files=len(view.listing), leases=len(view.leases), problems=problems, members=members,
                        awaiting_deletion=len(awaiting))
