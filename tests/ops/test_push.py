"""``ops.push.plan_push``: which commits a push still makes, and where the done units go. Pure.

The push itself, through the real CLI onto the loopback Hub, is in ``tests/e2e/test_push_e2e.py``."""

from __future__ import annotations

import pytest

from sharp_dataset_pipeline.errors import ConfigError
from sharp_dataset_pipeline.ledger.status import FailedItem
from sharp_dataset_pipeline.ops.push import COMMIT_FILES, PushOptions, plan_push
from sharp_dataset_pipeline.publish.parquet_index import ShardMember, members_json
from sharp_dataset_pipeline.publish.transfer_plan import RowRef, row_ref
from sharp_dataset_pipeline.records import IndexRow


def _row(item_id: str, unit: str, shard: str) -> RowRef:
    member = ShardMember(shard, f"{item_id}.spz", "spz", 512, 100, "0" * 64)
    return row_ref(IndexRow(id=item_id, source="folder", unit=unit, shard_key=item_id, shard_path=shard,
                            members=members_json([member])))


def _shard(n: int) -> str:
    return f"data/shards/{n:02x}/{n:02x}{'0' * 18}-000.tar"


ROWS = [_row("a1", "u1", _shard(1)), _row("a2", "u1", _shard(1)), _row("b1", "u1", _shard(2)),
        _row("b2", "u2", _shard(2)), _row("c1", "u2", _shard(3))]


def test_each_done_unit_rides_on_the_commit_of_its_last_row() -> None:
    commits = plan_push(ROWS, ["u1", "u2", "u3"], set(), set(), PushOptions(step_files=1))
    assert [c.shards for c in commits] == [(_shard(1),), (_shard(2),), (_shard(3),), ()]
    assert [[r.id for r in c.rows] for c in commits] == [["a1", "a2"], ["b1", "b2"], ["c1"], []]
    # u1's last row is in the second commit, u2's in the third; u3 has no row: a markers-only commit.
    assert [c.units_done for c in commits] == [(), ("u1",), ("u2",), ("u3",)]


def test_what_the_target_has_is_left_out() -> None:
    commits = plan_push(ROWS, ["u1", "u2"], {"a1", "a2", "b2"}, {"u2"}, PushOptions(step_files=1))
    # shard 1 is all there; shard 2 goes for b1 alone; u2 is done there already.
    assert [(c.shards, [r.id for r in c.rows], c.units_done) for c in commits] == [
        ((_shard(2),), ["b1"], ("u1",)), ((_shard(3),), ["c1"], ())]
    assert plan_push(ROWS, ["u1", "u2"], {r.id for r in ROWS}, {"u1", "u2"}, PushOptions()) == []


def test_commits_stay_bounded_in_files() -> None:
    rows = [_row(f"i{n}", f"u{n}", _shard(n)) for n in range(1, 7)]
    units = [f"u{n}" for n in range(1, 7)] + [f"x{n}" for n in range(2 * COMMIT_FILES)]
    commits = plan_push(rows, units, set(), set(), PushOptions(step_files=4))
    assert [len(c.shards) for c in commits] == [4, 2, 0, 0, 0]
    for c in commits:
        # besides tars and markers: the progress file, and with rows their JSONL and Parquet index shards
        assert len(c.shards) + len(c.units_done) + (3 if c.rows else 1) <= COMMIT_FILES
    assert sorted(u for c in commits for u in c.units_done) == sorted(units)  # every one, once
    assert [u for u in commits[0].units_done] == ["u1", "u2", "u3", "u4"]


def test_units_that_do_not_fit_their_commit_follow_in_markers_only_commits() -> None:
    rows = [_row(f"i{n}", f"u{n:03d}", _shard(1)) for n in range(COMMIT_FILES)]  # one tar, a unit per row
    units = [r.unit for r in rows]
    commits = plan_push(rows, units, set(), set(), PushOptions())
    assert [(len(c.shards), len(c.rows)) for c in commits] == [(1, COMMIT_FILES), (0, 0)]
    assert len(commits[0].units_done) == COMMIT_FILES - 1 - 3  # the tar, two index shards, the progress file
    assert list(commits[0].units_done + commits[1].units_done) == units


def test_local_removals_ride_on_the_first_commit() -> None:
    removed = [("gone1", "takedown"), ("gone2", "takedown")]
    commits = plan_push(ROWS, [], {"gone2"}, set(), PushOptions(step_files=1), removed)  # gone2: removed there
    assert [c.removed for c in commits] == [(("gone1", "takedown"),), (), ()]
    alone = plan_push(ROWS, [], {r.id for r in ROWS}, set(), PushOptions(), removed)  # nothing else to push
    assert [(c.shards, c.rows, c.removed) for c in alone] == [((), (), tuple(removed))]


def _failed(item_id: str) -> FailedItem:
    return FailedItem(item_id, "x.jpg", "u9", "fetch", "not_an_image", "not an image", False, 1, 1.0, "c")


def test_local_failures_ride_on_the_first_commit_and_leave_it_room() -> None:
    failures = [_failed("bad1"), _failed("a1")]  # a1: published at the target since (its failure is moot there)
    commits = plan_push(ROWS, [], {"a1"}, set(), PushOptions(step_files=1), (), failures)
    assert [c.failures for c in commits] == [(failures[0],), (), ()]
    alone = plan_push(ROWS, [], {r.id for r in ROWS}, set(), PushOptions(), [("gone", "takedown")], failures[:1])
    assert [(c.shards, c.removed, c.failures) for c in alone] == [((), (("gone", "takedown"),), (failures[0],))]
    # A full first commit: its removal and failure files still fit, done units move on.
    rows = [_row(f"i{n}", f"u{n:03d}", _shard(1)) for n in range(COMMIT_FILES)]
    units = [r.unit for r in rows]
    for removed in ([], [("gone", "takedown")]):
        commits = plan_push(rows, units, set(), set(), PushOptions(), removed, failures[:1])
        first = commits[0]
        assert len(first.shards) + 3 + len(first.units_done) + bool(first.removed) + bool(first.failures) \
            <= COMMIT_FILES
        assert sorted(u for c in commits for u in c.units_done) == sorted(units)
        markers_only = plan_push([], units, set(), set(), PushOptions(), removed, failures[:1])
        assert len(markers_only[0].units_done) + 1 + bool(removed) + 1 <= COMMIT_FILES
        assert sorted(u for c in markers_only for u in c.units_done) == sorted(units)


def test_step_limits_are_checked() -> None:
    with pytest.raises(ConfigError, match="--step-files"):
        PushOptions(step_files=0)
    with pytest.raises(ConfigError, match="--step-files"):
        PushOptions(step_files=COMMIT_FILES)
    with pytest.raises(ConfigError, match="--step-bytes"):
        PushOptions(step_bytes=0)
