"""Unit done-ness: a unit is done only when enumerated completely and every item settled for good."""

from sharp_dataset_pipeline.pipeline.tracker import UnitTracker


def test_unit_done_only_after_all_items_settle_and_enumeration_closed() -> None:
    t = UnitTracker()
    t.open("u")
    t.admit("u")
    t.admit("u")
    assert t.ready_after([("u", False), ("u", False)]) == []  # still open
    t.close("u", complete=True)
    assert t.ready_after([("u", False)]) == []
    assert t.ready_after([("u", False), ("u", False)]) == ["u"]
    t.settle("u")
    t.settle("u")
    assert t.ready_after([]) == ["u"]
    t.confirm_done(["u"])
    assert t.ready_after([]) == [] and t.held() == []


def test_retry_later_or_cut_short_units_are_never_done() -> None:
    t = UnitTracker()
    for key in ("retry", "cut", "abandoned"):
        t.open(key)
        t.admit(key)
    t.close("retry", complete=True)
    t.close("cut", complete=False)
    t.close("abandoned", complete=True)
    t.abandon("abandoned")
    assert t.ready_after([("retry", True), ("cut", False), ("abandoned", False)]) == []
    t.settle("retry", retry_later=True)
    assert t.ready_after([]) == []
    assert sorted(t.held()) == ["abandoned", "cut", "retry"]


def test_empty_unit_is_done_at_once() -> None:
    t = UnitTracker()
    t.open("empty")
    t.close("empty", complete=True)
    assert t.ready_after([]) == ["empty"]


def test_a_lost_unit_is_no_longer_held_nor_marked_done() -> None:
    t = UnitTracker()
    t.open("mine")
    t.admit("mine")
    t.close("mine", complete=True)
    t.lose("mine")
    assert t.held() == []
    t.settle("mine")
    assert t.ready_after([]) == []
