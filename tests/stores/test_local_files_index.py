"""The files layout's typed Parquet index on the local store: one twin per JSONL index file, made from its
rows, kept in step by every operation that changes them, and repaired by ``open()``."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest
from PIL import Image

from sharp_dataset_pipeline.publish.files_index import FILES_INDEX_DIR, plan_sync, preview_ref, twin_path
from sharp_dataset_pipeline.publish.index import decode_rows
from sharp_dataset_pipeline.publish.parquet_index import read_index
from sharp_dataset_pipeline.records import Batch, IndexRow, ProcessedItem, PublishedFile
from sharp_dataset_pipeline.stores.local import LocalStore
from sharp_dataset_pipeline.stores.local_files_index import MANIFEST_PATH, sync_files_index
from sharp_dataset_pipeline.stores.local_share import update_local_share_fields
from sharp_dataset_pipeline.stores.local_verify import verify_local


class Clock:
    now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _file(work: Path, kind: str, repo: str, data: bytes) -> PublishedFile:
    local = work / repo.replace("/", "_")
    local.write_bytes(data)
    return PublishedFile(kind, repo, local, len(data), hashlib.sha256(data).hexdigest())


def make_item(work: Path, item_id: str, colour: tuple[int, int, int] = (200, 40, 40)) -> ProcessedItem:
    """An item with a photo, a PLY and a real WebP preview, tagged like an Unsplash row."""
    work.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), colour).save(buf, "WEBP")
    photo = _file(work, "image", f"photos/{item_id}/{item_id}.jpg", f"jpg {item_id}".encode() * 20)
    ply = _file(work, "ply", f"photos/{item_id}/{item_id}.ply", f"ply {item_id}".encode() * 40)
    preview = _file(work, "preview", f"photos/{item_id}/{item_id}.preview.webp", buf.getvalue())
    row = IndexRow(id=item_id, source="folder", unit="folder/x/00000-00299", width=64, height=48, focal_px=55.5,
                   tags="sea,sky", description="")
    row.image_path, row.image_size, row.image_sha256 = photo.repo_path, photo.size, photo.sha256
    row.ply_path, row.ply_size, row.ply_sha256 = ply.repo_path, ply.size, ply.sha256
    row.extra_files = json.dumps([{"kind": "preview", "path": preview.repo_path, "size": preview.size,
                                   "sha256": preview.sha256}], sort_keys=True)
    return ProcessedItem(row, [photo, ply, preview])


@pytest.fixture()
def store(tmp_path: Path) -> LocalStore:
    s = LocalStore(tmp_path / "repo", clock=Clock())
    s.open()
    assert s.layout == "files"
    yield s
    s.close()


def _jsonl_ids(root: Path) -> dict[str, list[str]]:
    return {p.name: sorted(r.id for r in decode_rows(p.read_bytes())) for p in sorted((root / "data").glob("*.jsonl"))}


def _twins(root: Path) -> dict[str, list[str]]:
    base = root / FILES_INDEX_DIR
    out = {}
    for p in sorted(base.glob("*.parquet")) if base.is_dir() else []:
        with p.open("rb") as fh:
            out[p.name] = sorted(e.row.id for e in read_index(fh))
    return out


def _in_step(root: Path) -> None:
    """Every JSONL file with rows has a twin with exactly its ids, and no other twin exists."""
    expected = {Path(twin_path(f"data/{name}")).name: ids for name, ids in _jsonl_ids(root).items() if ids}
    assert _twins(root) == expected


def test_a_publish_step_writes_a_typed_twin_with_previews(store: LocalStore, tmp_path: Path) -> None:
    store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", "a"), make_item(tmp_path / "w", "b")]))
    _in_step(store.root)
    (twin,) = (store.root / FILES_INDEX_DIR).glob("*.parquet")
    table = pq.read_table(twin)
    assert table.schema.field("tags").type.value_type == "string"
    rec = table.to_pylist()[0]
    assert rec["tags"] == ["sea", "sky"] and rec["description"] is None and rec["layout"] == "files"
    assert rec["extra_files"][0]["kind"] == "preview" and rec["image_path"] == "photos/a/a.jpg"
    ds = datasets.load_dataset(str(store.root), split="train", cache_dir=str(tmp_path / "cache"))
    assert sorted(ds["id"]) == ["a", "b"]
    assert isinstance(ds.features["preview"], datasets.Image)
    assert ds[0]["preview"].size == (32, 24) and ds[0]["tags"] == ["sea", "sky"]


def test_twins_follow_remove_share_and_compaction(store: LocalStore, tmp_path: Path) -> None:
    store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", k) for k in ("a", "b")]))
    store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", k) for k in ("c", "d")]))
    _in_step(store.root)
    store.admin().remove(["b"], "takedown", Clock.now)
    _in_step(store.root)
    assert "b" not in sum(_twins(store.root).values(), [])
    assert update_local_share_fields(store, "c", {"gsplat_url": "https://gsplat.org/viewer/c1"})
    _in_step(store.root)
    shown = {e.row.id: e.row.gsplat_url for t in (store.root / FILES_INDEX_DIR).glob("*.parquet")
             for e in read_index(t.open("rb"))}
    assert shown == {"a": "", "c": "https://gsplat.org/viewer/c1", "d": ""}
    assert store.compact() == 3
    _in_step(store.root)
    assert _twins(store.root) == {"train.parquet": ["a", "c", "d"]}
    report = store.admin().verify(Clock.now)
    assert report.problems == []


def test_a_twin_left_stale_is_reported_and_made_again_by_open(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    s = LocalStore(root, clock=Clock())
    s.open()
    s.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", "a")]))
    s.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", "b")]))
    before_compaction = {p: p.read_bytes() for p in [root / MANIFEST_PATH, *(root / FILES_INDEX_DIR).glob("*")]}
    s.compact()
    s.close()
    # A process killed after compaction rewrote the JSONL index, before the twins followed: the old
    # twins and sync record are what is on disk, and a dead writer's temp file is left beside them.
    for p in (root / FILES_INDEX_DIR).glob("*"):
        p.unlink()
    for p, data in before_compaction.items():
        p.write_bytes(data)
    (root / FILES_INDEX_DIR / ".train.parquet.tmp-999999-abcd1234").write_bytes(b"partial")
    assert _twins(root) != {"train.parquet": ["a", "b"]}
    s = LocalStore(root, clock=Clock())
    s.open()
    try:
        assert _twins(root) == {"train.parquet": ["a", "b"]}
        assert not list((root / FILES_INDEX_DIR).glob(".*"))
        assert s.admin().verify(Clock.now).problems == []
    finally:
        s.close()


def test_verify_reports_a_twin_that_lost_a_row(store: LocalStore, tmp_path: Path) -> None:
    store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", "a")]))
    (twin,) = (store.root / FILES_INDEX_DIR).glob("*.parquet")
    old = twin.read_bytes()
    store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", "b")]))
    store.compact()
    (store.root / FILES_INDEX_DIR / "train.parquet").write_bytes(old)  # changed outside the tool
    report = verify_local(store.root, store.index_path, "local:repo", Clock.now, settle_s=0)
    assert [(p.kind, p.subject) for p in report.problems] == [("index_mismatch", "b")]


def test_an_unchanged_index_file_is_not_read_again(store: LocalStore, tmp_path: Path) -> None:
    store.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", "a")]))
    assert sync_files_index(store.root, store.index_path).written == []
    (store.root / MANIFEST_PATH).unlink()  # the sync record lost: every twin is made again, same ids
    again = sync_files_index(store.root, store.index_path)
    assert len(again.written) == 1
    _in_step(store.root)


def test_an_old_files_dataset_gets_its_twins_and_card_on_open(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    s = LocalStore(root, clock=Clock())
    s.open()
    s.publish(Batch(client_id="c1", items=[make_item(tmp_path / "w", "a")]))
    s.close()
    # As an earlier version left it: no twins, no sync record, the card's config on the JSONL files.
    for p in (root / FILES_INDEX_DIR).glob("*"):
        p.unlink()
    (root / FILES_INDEX_DIR).rmdir()
    (root / MANIFEST_PATH).unlink()
    card = (root / "README.md").read_text()
    (root / "README.md").write_text(card.replace("data/index/**/*.parquet", "data/train*.jsonl"))
    s = LocalStore(root, clock=Clock())
    s.open()
    s.close()
    _in_step(root)
    assert "path: \"data/index/**/*.parquet\"" in (root / "README.md").read_text()


def test_plan_sync_rebuilds_changed_files_and_deletes_lone_twins() -> None:
    plan = plan_sync({"data/a.jsonl": "1", "data/b.jsonl": "2", "data/c.jsonl": "3"},
                     {"data/a.jsonl": "1", "data/b.jsonl": "old"},
                     ["data/index/files/a.parquet", "data/index/files/gone.parquet"])
    assert plan.rebuild == ("data/b.jsonl", "data/c.jsonl")
    assert plan.delete == ("data/index/files/gone.parquet",)


def test_preview_ref_finds_the_preview_among_extra_files() -> None:
    row = IndexRow(id="a", source="s", unit="u", extra_files=json.dumps([
        {"kind": "spz", "path": "p/a/a.spz", "size": 3, "sha256": "x"},
        {"kind": "preview", "path": "p/a/a.preview.webp", "size": 4, "sha256": "y"}]))
    ref = preview_ref(row)
    assert ref is not None and ref.path == "p/a/a.preview.webp" and ref.size == 4
    assert preview_ref(IndexRow(id="b", source="s", unit="u")) is None
