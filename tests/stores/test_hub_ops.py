"""Pure commit planning: what one Hub commit carries, decided at a known state."""

from __future__ import annotations

import json
from pathlib import Path

from emulators.hub import make_items
from sharp_dataset_pipeline.ledger.leases import encode_lease, new_lease
from sharp_dataset_pipeline.publish import layout
from sharp_dataset_pipeline.publish.index import decode_rows, encode_rows
from sharp_dataset_pipeline.records import Batch, Failure, Followup, Unit
from sharp_dataset_pipeline.stores.hub_ops import (
    PublishInputs,
    plan_acquire,
    plan_compact,
    plan_publish,
    plan_release,
)
from sharp_dataset_pipeline.stores.hub_state import (
    BATCH_DIR,
    HubState,
    classify,
    decode_ledger,
    git_blob_oid,
    parse_content,
)

INDEX = "data/train.jsonl"
NOW = 1_800_000_000.0


def _state(files: dict[str, bytes], sha: str = "a" * 40) -> HubState:
    entries, parsed = {}, {}
    for path, data in files.items():
        kind = classify(path, INDEX)
        entries[path] = git_blob_oid(data)
        parsed[path] = parse_content(kind, data)
    return HubState(sha, INDEX, entries, parsed, NOW)


def _lease(unit: str, owner: str, start: float, ttl: float = 100.0) -> dict[str, bytes]:
    return {layout.lease_path(unit): encode_lease(new_lease(unit, owner, start, ttl, "n0"))}


def _inputs(**kw) -> PublishInputs:
    return PublishInputs(client_id=kw.pop("client_id", "me"), index_path=INDEX, now=kw.pop("now", NOW),
                         nonce=kw.pop("nonce", "abc123"), **kw)


def test_publish_skips_ids_already_in_the_index(tmp_path: Path) -> None:
    done = make_items(tmp_path, ["p1"])
    shard = layout.shard_path(INDEX, "other", NOW - 10, "x1")
    state = _state({shard: encode_rows([done[0].row])})
    items = make_items(tmp_path, ["p1", "p2", "p2"])
    plan = plan_publish(state, Batch("me", items=items), _inputs())
    assert plan is not None
    assert plan.published_ids == ["p2"] and plan.skipped_ids == ["p1"]
    shard_paths = [p for p in plan.adds if p.startswith("data/")]
    assert len(shard_paths) == 1
    assert [r.id for r in decode_rows(plan.adds[shard_paths[0]])] == ["p2"]
    assert "photos/p2/p2.jpg" in plan.adds and "photos/p1/p1.jpg" not in plan.adds
    assert plan.marker.startswith(".coord/progress/")


def test_nothing_new_means_no_commit(tmp_path: Path) -> None:
    items = make_items(tmp_path, ["p1"])
    state = _state({layout.shard_path(INDEX, "x", NOW, "y1"): encode_rows([items[0].row])})
    assert plan_publish(state, Batch("me", items=items), _inputs()) is None


def test_lost_lease_still_publishes_but_neither_renews_nor_marks_done(tmp_path: Path) -> None:
    state = _state(_lease("u1", "other", NOW - 10))
    items = make_items(tmp_path, ["a"], unit="u1")
    plan = plan_publish(state, Batch("me", items=items, units_done=["u1"], lease_ttl_s=100), _inputs())
    assert plan is not None and plan.published_ids == ["a"]
    assert plan.lost == ["u1"]
    assert layout.unit_done_path("u1") not in plan.adds
    assert layout.lease_path("u1") not in plan.adds and not plan.deletes


def test_renewal_waits_for_a_quarter_of_the_ttl_and_done_deletes_the_lease(tmp_path: Path) -> None:
    state = _state({**_lease("u1", "me", NOW - 10), **_lease("u2", "me", NOW - 30)})
    batch = Batch("me", items=make_items(tmp_path, ["a"], unit="u1"), renew_units=["u1", "u2"],
                  lease_ttl_s=100)
    plan = plan_publish(state, batch, _inputs())
    assert plan.renewed == ["u2"]  # 30% of u2's time has passed, 10% of u1's
    renewed = json.loads(plan.adds[layout.lease_path("u2")])
    assert renewed["expires_at"] == NOW + 100 and renewed["owner"] == "me"
    plan = plan_publish(state, Batch("me", units_done=["u1"], lease_ttl_s=100), _inputs())
    assert layout.unit_done_path("u1") in plan.adds
    assert plan.deletes == [layout.lease_path("u1")]


def test_expired_lease_of_another_client_is_taken_back_on_renewal() -> None:
    state = _state(_lease("u1", "other", NOW - 500))
    plan = plan_publish(state, Batch("me", renew_units=["u1"], lease_ttl_s=100), _inputs())
    assert plan.renewed == ["u1"] and not plan.lost


def test_acquire_rules() -> None:
    unit = Unit("u1", 0, 10)
    assert plan_acquire(_state(_lease("u1", "other", NOW)), unit, "me", 100, NOW, "n") is None
    expired = plan_acquire(_state(_lease("u1", "other", NOW - 101)), unit, "me", 100, NOW, "n")
    assert expired is not None and expired.lease.owner == "me"
    own = plan_acquire(_state(_lease("u1", "me", NOW)), unit, "me", 100, NOW + 1, "n2")
    assert own is not None and own.lease.nonce == "n2"
    done = _state({layout.unit_done_path("u1"): b'{"unit": "u1"}'})
    assert plan_acquire(done, unit, "me", 100, NOW, "n") is None
    # Each attempt's content is unique, so a resend is never a client-side no-op.
    again = plan_acquire(_state(_lease("u1", "me", NOW)), unit, "me", 100, NOW + 1, "n3")
    assert own.known[own.marker][0] != again.known[again.marker][0]


def test_release_only_touches_own_leases() -> None:
    state = _state({**_lease("u1", "me", NOW), **_lease("u2", "other", NOW)})
    plan = plan_release(state, ["u1", "u2", "u3"], "me")
    assert plan.deletes == [layout.lease_path("u1")]
    assert plan_release(state, ["u2"], "me") is None


def test_fanout_moves_new_items_once_a_folder_is_full(tmp_path: Path) -> None:
    old = make_items(tmp_path, ["aa1", "ab2", "ac3"])
    state = _state({layout.shard_path(INDEX, "x", NOW, "s1"): encode_rows([i.row for i in old])})
    new = make_items(tmp_path, ["zz9"])
    new[0].row.extra_files = json.dumps([{"path": "photos/zz9/zz9.ply", "size": 1}])
    plan = plan_publish(state, Batch("me", items=new), _inputs(fanout_threshold=3))
    assert "photos/zz/zz9/zz9.jpg" in plan.adds and "photos/zz/zz9/zz9.ply" in plan.adds
    shard = next(p for p in plan.adds if p.startswith("data/"))
    row = decode_rows(plan.adds[shard])[0]
    assert row.image_path == "photos/zz/zz9/zz9.jpg" and row.ply_path == "photos/zz/zz9/zz9.ply"
    assert json.loads(row.extra_files)[0]["path"] == "photos/zz/zz9/zz9.ply"
    plan = plan_publish(state, Batch("me", items=make_items(tmp_path, ["zz8"])), _inputs(fanout_threshold=4))
    assert "photos/zz8/zz8.jpg" in plan.adds


def test_failures_and_followups_ride_in_a_ledger_delta(tmp_path: Path) -> None:
    items = make_items(tmp_path, ["a"])
    batch = Batch("me", items=items, failures=[Failure("b", "u", "fetch", "http_404", "gone", False)],
                  followups=[Followup("track", "a", "x"), Followup("track", "skipped", "y")])
    plan = plan_publish(_state({}), batch, _inputs(followups_done=[Followup("track", "old", "")]))
    path = next(p for p in plan.adds if p.startswith(BATCH_DIR + "/"))
    delta = decode_ledger(plan.adds[path])
    assert [f["item_id"] for f in delta.failures] == ["b"]
    assert [f.item_id for f in delta.followups] == ["a"]  # only for items this commit publishes
    assert delta.followups_done == (("track", "old"),)


def test_compaction_merges_shards_and_ledgers_in_one_plan(tmp_path: Path) -> None:
    rows = [i.row for i in make_items(tmp_path, ["a", "b", "c"])]
    s1 = layout.shard_path(INDEX, "x", NOW, "s1")
    s2 = layout.shard_path(INDEX, "y", NOW + 1, "s2")
    b1 = f"{BATCH_DIR}/1.json"
    ledger_bytes = json.dumps({
        "failures": [{"item_id": "a", "transient": True}, {"item_id": "q", "transient": True}],
        "followups": [{"kind": "t", "item_id": "a", "payload": ""}, {"kind": "t", "item_id": "b", "payload": ""}],
        "followups_done": [{"kind": "t", "item_id": "a"}],
    }).encode()
    files = {INDEX: encode_rows(rows[:1]), s1: encode_rows(rows[1:2]), s2: encode_rows(rows[1:3]), b1: ledger_bytes}
    state = _state(files)
    shard_rows = {s1: decode_rows(files[s1]), s2: decode_rows(files[s2])}
    ledgers = {b1: state.parsed[b1]}
    plan = plan_compact(state, decode_rows(files[INDEX]), shard_rows, ledgers, INDEX)
    assert [r.id for r in decode_rows(plan.adds[INDEX])] == ["a", "b", "c"]
    assert sorted(plan.deletes) == sorted([s1, s2, b1])
    merged = decode_ledger(plan.adds[".coord/ledger.json"])
    assert [f["item_id"] for f in merged.failures] == ["q"]  # "a" is published: published wins
    assert [f.item_id for f in merged.followups] == ["b"]
    after = _state({INDEX: plan.adds[INDEX], ".coord/ledger.json": plan.adds[".coord/ledger.json"]}, "b" * 40)
    assert plan.landed(after) and not plan.landed(state)
    assert plan_compact(after, decode_rows(plan.adds[INDEX]), {}, {}, INDEX) is None
