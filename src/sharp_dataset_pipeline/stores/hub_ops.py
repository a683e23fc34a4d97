"""Pure commit planning for the Hub store: decide at a known state what one commit carries.

Every function takes the ``HubState`` the commit will name as its parent (``parent_commit``), so
the decision is exactly as fresh as the compare-and-swap that guards it: if the head moved, the
commit is refused (412) and the caller re-reads and plans again.

Decisions documented here:
- publish drops items already published at the parent (the done set is the index), so no id is
  ever published twice, whoever published it first;
- items of a unit whose lease was taken over by another client are still published if nobody has
  published them yet (the work is done; the other client drops them at its next publish), but the
  lease is not renewed, the unit is not marked done by us, and the unit is reported as lost;
- a lease is renewed only when more than a quarter of its time has run out, so most publish
  commits do not rewrite lease files that other clients would then have to download again;
- each commit carries a file with unique content (the client's progress file, a lease with a fresh
  nonce): it can never be skipped as a no-op, and its presence at a later head proves the commit
  landed when the answer to it was lost.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..ledger.leases import encode_lease, may_take, new_lease, renewed
from ..publish import layout
from ..publish.index import encode_rows, row_files
from ..records import Batch, Failure, Followup, IndexRow, Lease, Unit
from .hub_state import (
    BATCH,
    BATCH_DIR,
    DONE,
    INDEX,
    LEASE,
    LEDGER,
    LEDGER_PATH,
    PROGRESS,
    PROGRESS_DIR,
    HubState,
    LedgerDelta,
    encode_ledger,
    git_blob_oid,
    lfs_pointer_oid,
    parse_content,
    summarize_rows,
)

RENEW_AFTER_FRACTION = 0.25  # renew once this much of a lease's time has passed
FANOUT_THRESHOLD = layout.FANOUT_THRESHOLD


@dataclass
class Plan:
    """One commit's intent. ``known`` holds the coordination files it writes (path -> oid, parsed)."""

    title: str
    adds: dict[str, bytes | Path] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    known: dict[str, tuple[str, Any]] = field(default_factory=dict)
    marker: str = ""
    published_ids: list[str] = field(default_factory=list)
    skipped_ids: list[str] = field(default_factory=list)
    replaced_ids: list[str] = field(default_factory=list)
    lease: Lease | None = None
    renewed: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    rows: int = 0

    def add_known(self, path: str, data: bytes, kind: str) -> None:
        self.adds[path] = data
        self.known[path] = (git_blob_oid(data), parse_content(kind, data))

    def landed(self, state: HubState) -> bool:
        """Whether ``state`` (a later head) shows this commit applied (its marker as a regular or an
        LFS file: the server picks)."""
        if self.marker:
            seen = state.entries.get(self.marker)
            data = self.adds[self.marker]
            if seen != self.known[self.marker][0] and not (isinstance(data, bytes) and seen == lfs_pointer_oid(data)):
                return False
        return all(p not in state.entries for p in self.deletes)

    def note_lfs(self, paths: Iterable[str]) -> None:
        """The known files the server took through LFS: the Hub lists those under their pointer's oid."""
        for path in paths:
            data = self.adds.get(path)
            if path in self.known and isinstance(data, bytes):
                self.known[path] = (lfs_pointer_oid(data), self.known[path][1])


def _lease_bytes(lease: Lease) -> bytes:
    return encode_lease(lease)


def plan_acquire(state: HubState, unit: Unit, client_id: str, ttl_s: float, now: float,
                 nonce: str, reopen: bool = False) -> Plan | None:
    """Take ``unit`` if it is not done (or ``reopen``: ``run --redo``) and free, expired, or ours
    already; None otherwise."""
    if unit.key in state.done_units and not reopen:
        return None
    if not may_take(state.leases.get(unit.key), client_id, now):
        return None
    lease = new_lease(unit.key, client_id, now, ttl_s, nonce)
    plan = Plan(title=f"lease {unit.key} ({client_id})", lease=lease)
    path = layout.lease_path(unit.key)
    plan.add_known(path, _lease_bytes(lease), LEASE)
    plan.marker = path
    return plan


def _renew_into(plan: Plan, state: HubState, units: Iterable[str], client_id: str, ttl_s: float,
                now: float, nonce: str, force: bool) -> None:
    for key in dict.fromkeys(units):
        current = state.leases.get(key)
        if key in state.done_units and (current is None or current.owner != client_id):
            continue  # done, and not reopened by us (``run --redo``)
        if not may_take(current, client_id, now):
            plan.lost.append(key)
            continue
        if current is not None and current.owner == client_id and not current.expired(now):
            fresh_enough = now - (current.expires_at - ttl_s) < ttl_s * RENEW_AFTER_FRACTION
            if fresh_enough and not force:
                continue
            lease = renewed(current, now, ttl_s, nonce)
        else:
            lease = new_lease(key, client_id, now, ttl_s, nonce)
        plan.add_known(layout.lease_path(key), _lease_bytes(lease), LEASE)
        plan.renewed.append(key)


def plan_renew(state: HubState, units: Iterable[str], client_id: str, ttl_s: float, now: float,
               nonce: str) -> Plan | None:
    """Extend our leases on ``units`` (taken-over ones are reported in ``lost``)."""
    plan = Plan(title=f"renew leases ({client_id})")
    _renew_into(plan, state, units, client_id, ttl_s, now, nonce, force=True)
    if not plan.renewed:
        return None if not plan.lost else plan
    plan.marker = layout.lease_path(plan.renewed[0])
    return plan


def plan_release(state: HubState, units: Iterable[str], client_id: str) -> Plan | None:
    """Delete our own lease files of ``units``; other clients' leases are left alone."""
    plan = Plan(title=f"release leases ({client_id})")
    for key in dict.fromkeys(units):
        lease = state.leases.get(key)
        path = layout.lease_path(key)
        if lease is not None and lease.owner == client_id and path in state.entries:
            plan.deletes.append(path)
    return plan if plan.deletes else None


def _failure_dict(f: Failure) -> dict[str, Any]:
    return {"item_id": f.item_id, "unit": f.unit, "stage": f.stage, "reason": f.reason,
            "detail": f.detail[:500], "transient": f.transient, "count": 1, "source": f.source}


@dataclass
class PublishInputs:
    """What a publish plan needs besides the batch and the state."""

    client_id: str
    index_path: str
    now: float
    nonce: str
    extra_failures: list[Failure] = field(default_factory=list)
    followups_done: list[Followup] = field(default_factory=list)
    published_total: int = 0
    fanout_threshold: int = FANOUT_THRESHOLD
    # Rows of the index files that hold ids this publish may replace (``Batch.redo``), read at the parent.
    index_rows: Mapping[str, list[IndexRow]] = field(default_factory=dict)


def replaces(redo: str, old: tuple[str, str], new: tuple[str, str]) -> bool:
    """Whether a publish with ``redo`` replaces a published item made by ``old`` (predictor, model)."""
    return redo == "all" or (redo == "model-changed" and old != new)


def to_replace(state: HubState, batch: Batch) -> list[str]:
    """Published ids of ``batch`` that its ``redo`` mode replaces (decided at ``state``)."""
    out: list[str] = []
    if batch.redo not in ("model-changed", "all"):
        return out
    for pi in batch.items:
        made = state.made_by(pi.row.id) if pi.row.id in state.published else None
        if made is not None and replaces(batch.redo, made[1:], (pi.row.predictor, pi.row.model_version)):
            out.append(pi.row.id)
    return out


def _item_files(plan: Plan, batch: Batch, state: HubState, inp: PublishInputs) -> list[IndexRow]:
    rows: list[IndexRow] = []
    seen: set[str] = set()
    replacing = set(to_replace(state, batch))
    for pi in batch.items:
        item_id = pi.row.id
        if item_id in seen:
            continue
        seen.add(item_id)
        if item_id in state.published and item_id not in replacing:
            plan.skipped_ids.append(item_id)
            continue
        if item_id in replacing:
            plan.replaced_ids.append(item_id)
        pi = layout.placed(pi, state.holders, inp.fanout_threshold)
        for f in pi.files:
            layout.check_repo_path(f.repo_path)
            plan.adds[f.repo_path] = f.local_path
        rows.append(pi.row)
        plan.published_ids.append(item_id)
    return rows


def plan_publish(state: HubState, batch: Batch, inp: PublishInputs) -> Plan | None:
    """One commit for a batch: item files, a new index shard, ledger delta, done markers, renewals."""
    plan = Plan(title=f"publish {len(batch.items)} items ({inp.client_id})")
    rows = _item_files(plan, batch, state, inp)
    if plan.replaced_ids:
        _drop_replaced(plan, state, inp)
    if rows:
        shard = layout.shard_path(inp.index_path, inp.client_id, inp.now, inp.nonce)
        data = encode_rows(rows)
        plan.adds[shard] = data
        plan.known[shard] = (git_blob_oid(data), summarize_rows(rows))
        plan.rows = len(rows)
    published = set(plan.published_ids)
    delta = LedgerDelta(
        # When and by whom it was recorded, kept through compaction (``failures`` lists them).
        failures=tuple({**_failure_dict(f), "at": inp.now, "client": inp.client_id}
                       for f in [*batch.failures, *inp.extra_failures]),
        followups=tuple(f for f in batch.followups if f.item_id in published),
        followups_done=tuple((f.kind, f.item_id) for f in [*batch.followups_done, *inp.followups_done]),
    )
    if delta.failures or delta.followups or delta.followups_done:
        name = f"{layout.utc_stamp(inp.now)}-{layout.safe_client(inp.client_id)}-{inp.nonce}.json"
        plan.add_known(f"{BATCH_DIR}/{name}", encode_ledger(delta, client=inp.client_id, at=inp.now), BATCH)
    done_now = _mark_done(plan, state, batch.units_done, inp)
    renew = [u for u in batch.renew_units if u not in done_now]
    if batch.lease_ttl_s > 0:
        _renew_into(plan, state, renew, inp.client_id, batch.lease_ttl_s, inp.now, inp.nonce, force=False)
    if not (plan.adds or plan.deletes):
        return None if not plan.lost else plan
    progress = {"client": inp.client_id, "at": inp.now, "nonce": inp.nonce,
                "published_total": inp.published_total + len(plan.published_ids),
                "units_held": sorted(set(batch.renew_units) - set(plan.lost))}
    _progress(plan, progress, inp.client_id)
    return plan


def _drop_replaced(plan: Plan, state: HubState, inp: PublishInputs) -> None:
    """In the same commit: the index files that held the replaced rows lose them (rewritten, or
    deleted when empty), and old item files the new rows no longer name are deleted."""
    gone = set(plan.replaced_ids)
    for path in state.index_files_of(gone):
        old_rows = inp.index_rows[path]
        for row in old_rows:
            if row.id in gone:
                plan.deletes += [p for p in row_files(row) if p not in plan.adds and p not in plan.deletes]
        kept = [row for row in old_rows if row.id not in gone]
        if kept or state.kind(path) == INDEX:
            data = encode_rows(kept)
            plan.adds[path] = data
            plan.known[path] = (git_blob_oid(data), summarize_rows(kept))
        else:
            plan.deletes.append(path)


def _mark_done(plan: Plan, state: HubState, units: Iterable[str], inp: PublishInputs) -> set[str]:
    done: set[str] = set()
    for key in dict.fromkeys(units):
        current = state.leases.get(key)
        if key in state.done_units:
            done.add(key)
        elif not may_take(current, inp.client_id, inp.now):
            plan.lost.append(key)  # someone else owns it now; they finish it and mark it
            continue
        else:
            marker = {"unit": key, "client": inp.client_id, "at": inp.now, "nonce": inp.nonce}
            plan.add_known(layout.unit_done_path(key), (json.dumps(marker, sort_keys=True) + "\n").encode(), DONE)
            done.add(key)
        path = layout.lease_path(key)
        if current is not None and current.owner == inp.client_id and path in state.entries:
            plan.deletes.append(path)
    return done


def merge_ledgers(deltas: Iterable[LedgerDelta], published: frozenset[str]) -> LedgerDelta:
    """Fold ledger deltas into one: failures tallied per id (published ids dropped: published wins),
    followups that were completed dropped with their completion."""
    failures: dict[str, dict[str, Any]] = {}
    recorded: dict[tuple[str, str], Followup] = {}
    done: set[tuple[str, str]] = set()
    for delta in deltas:
        for f in delta.failures:
            if f["item_id"] in published:
                continue
            old = failures.get(f["item_id"])
            new = dict(f)
            if old is not None:
                new["count"] = int(old.get("count", 1)) + int(f.get("count", 1))
                new["transient"] = bool(old["transient"]) and bool(f["transient"])
                new["source"] = f.get("source") or old.get("source", "")
            failures[f["item_id"]] = new
        for fu in delta.followups:
            recorded.setdefault((fu.kind, fu.item_id), fu)
        done.update(delta.followups_done)
    return LedgerDelta(
        failures=tuple(failures[k] for k in sorted(failures)),
        followups=tuple(f for k, f in sorted(recorded.items()) if k not in done),
        followups_done=(),
    )


def plan_compact(state: HubState, index_rows: list[IndexRow], shard_rows: Mapping[str, list[IndexRow]],
                 ledgers: Mapping[str, LedgerDelta], index_path: str) -> Plan | None:
    """Shards -> the index file and ledger deltas -> the ledger file, their sources deleted, one commit.

    Rows keep their order (compacted file first, then shards by name, which starts with a UTC time);
    an id seen twice keeps its first row.
    """
    if not shard_rows and not [p for p in ledgers if state.kind(p) == BATCH]:
        return None
    plan = Plan(title=f"compact {len(shard_rows)} index shards")
    seen: set[str] = set()
    rows: list[IndexRow] = []
    for row in [*index_rows, *(r for p in sorted(shard_rows) for r in shard_rows[p])]:
        if row.id not in seen:
            seen.add(row.id)
            rows.append(row)
    if shard_rows:
        data = encode_rows(rows)
        plan.adds[index_path] = data
        plan.known[index_path] = (git_blob_oid(data), summarize_rows(rows))
        plan.deletes.extend(sorted(shard_rows))
        plan.marker = index_path
    batch_paths = sorted(p for p in ledgers if state.kind(p) == BATCH)
    if batch_paths:
        merged = merge_ledgers([ledgers[p] for p in sorted(ledgers) if state.kind(p) == LEDGER]
                               + [ledgers[p] for p in batch_paths], frozenset(seen))
        plan.add_known(LEDGER_PATH, encode_ledger(merged), LEDGER)
        plan.deletes.extend(batch_paths)
        plan.marker = plan.marker or LEDGER_PATH
    plan.rows = len(rows)
    return plan


def plan_card(card: str | None, client_id: str, now: float, nonce: str) -> Plan:
    """Write the dataset card (``None``: no card, e.g. only the layout marker rides along); the
    client's progress file rides along so the commit is never a no-op."""
    plan = Plan(title="dataset card" if card is not None else "dataset layout")
    if card is not None:
        plan.adds[layout.README_PATH] = card.encode("utf-8")
    _progress(plan, {"client": client_id, "at": now, "nonce": nonce}, client_id)
    return plan


def _progress(plan: Plan, progress: dict[str, Any], client_id: str) -> None:
    path = f"{PROGRESS_DIR}/{layout.safe_client(client_id)}.json"
    plan.add_known(path, (json.dumps(progress, sort_keys=True) + "\n").encode(), PROGRESS)
    plan.marker = path
