"""Line-level index edits keep every other line byte for byte."""

from sharp_dataset_pipeline.publish.index_edit import drop_lines, update_lines

DATA = b'{"id":"a","gsplat_url":""}\n{"id": "b",  "x": 1}\nnot json\n{"id":"c","gsplat_url":""}\n'


def test_drop_lines_removes_only_the_given_ids() -> None:
    assert drop_lines(DATA, {"a", "c"}) == b'{"id": "b",  "x": 1}\nnot json\n'


def test_update_lines_merges_fields_and_keeps_the_rest_untouched() -> None:
    out = update_lines(DATA, {"c": {"gsplat_url": "https://v/1"}}).decode().splitlines()
    assert out[:3] == ['{"id":"a","gsplat_url":""}', '{"id": "b",  "x": 1}', "not json"]
    assert out[3] == '{"id":"c","gsplat_url":"https://v/1"}'
