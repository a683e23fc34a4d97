"""verify --deep on the Hub store's sharded layout (emulated Hub, real client code): a published repo is
consistent, a flipped byte inside one member of a tar is reported against that item and member;
status counts the items the shards hold; gallery builds its media from the members."""

from __future__ import annotations

import io
import json
from pathlib import Path

from huggingface_hub import HfApi
from PIL import Image

from emulators.hub import HubEmulator, ManualClock
from emulators.hub_lfs import HUB_DATASET_GITATTRIBUTES
from sharp_dataset_pipeline.ops.gallery.build import GalleryOptions, build_gallery
from sharp_dataset_pipeline.ops.status import dataset_status
from sharp_dataset_pipeline.publish.parquet_index import read_ids, row_members
from sharp_dataset_pipeline.publish.shard_keys import encode_key
from sharp_dataset_pipeline.records import Batch
from sharp_dataset_pipeline.splat.ply import read_ply
from sharp_dataset_pipeline.stores.hub import HubOptions, HubStore
from sharp_dataset_pipeline.stores.hub_admin import HubAdmin
from stores.shard_items import planar_items

REPO = "tester/shardverify"
TOKEN = "hf_shardverifytoken0000"


def _store(hub: HubEmulator, clock: ManualClock, tmp_path: Path) -> HubStore:
    store = HubStore(HubOptions(REPO, endpoint=hub.url, token=TOKEN, client_id="c1", cache_dir=tmp_path / "c",
                                state_max_age_s=0.0, retry_base_s=0.5), clock=clock, sleep=clock.sleep)
    store.open()
    return store


def _two_steps(hub: HubEmulator, clock: ManualClock, tmp_path: Path, first: list[str],
               second: list[str]) -> tuple[HubStore, HubAdmin, list[str]]:
    """A sharded repo of two publish steps, verified clean: the store, its admin and the Parquet index files."""
    store = _store(hub, clock, tmp_path)
    store.publish(Batch("c1", items=planar_items(tmp_path / "b1", first), units_done=[]))
    store.publish(Batch("c1", items=planar_items(tmp_path / "b2", second), units_done=[]))
    admin = store.admin()
    assert admin.verify(clock()).ok
    return store, admin, sorted(p for p in hub.files(REPO) if p.startswith("data/index/") and p.endswith(".parquet"))


def test_deep_verify_names_a_corrupted_member(tmp_path: Path) -> None:
    clock = ManualClock()
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store = _store(hub, clock, tmp_path)
        ids = ["v1", "v2", "v3"]
        store.publish(Batch("c1", items=planar_items(tmp_path / "b", ids), units_done=[]))
        admin = store.admin()
        report = admin.verify(clock(), deep=True)
        assert report.ok, report.text()
        assert report.rows == 3 and report.files >= 1  # the tar is in the checked listing
        rows = {r.id: r for r in admin.rows()}
        spz = next(m for m in row_members(rows["v2"]) if m.field == "spz")
        data = bytearray(hub.files(REPO)[spz.shard])
        data[spz.offset + 7] ^= 0x10
        api = HfApi(endpoint=hub.url, token=TOKEN)
        api.upload_file(path_or_fileobj=bytes(data), path_in_repo=spz.shard, repo_id=REPO, repo_type="dataset")
        assert admin.verify(clock(), deep=False).ok  # same size: only the hashes tell
        problems = admin.verify(clock(), deep=True).problems
        assert [(p.kind, p.subject) for p in problems] == [("member_mismatch", "v2")]
        assert f"{encode_key('v2')}.spz" in problems[0].detail
        assert json.loads(hub.files(REPO)[".coord/layout.json"]) == {"layout": "shards"}


def test_verify_checks_the_parquet_index_against_the_rows(tmp_path: Path) -> None:
    """The card's default config is the Parquet index: an index file lost (or not Parquet) is named,
    with the ids the JSONL rows have and the index does not."""
    clock = ManualClock()
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store, admin, parquet = _two_steps(hub, clock, tmp_path, ["p1", "p2"], ["p3"])
        assert len(parquet) == 2
        api = HfApi(endpoint=hub.url, token=TOKEN)
        # By the ids the file holds: its bytes may hold "p3" by chance (a hash, compressed data).
        with_p3 = next(p for p in parquet if "p3" in read_ids(io.BytesIO(hub.files(REPO)[p])))
        api.delete_file(with_p3, repo_id=REPO, repo_type="dataset")
        problems = admin.verify(clock()).problems
        assert [(p.kind, p.subject) for p in problems] == [("index_mismatch", "p3")]
        other = next(p for p in parquet if p != with_p3)
        api.upload_file(path_or_fileobj=b"not parquet", path_in_repo=other, repo_id=REPO, repo_type="dataset")
        kinds = sorted((p.kind, p.subject) for p in admin.verify(clock()).problems)
        assert kinds == [("index_mismatch", other), ("index_mismatch", "p1"), ("index_mismatch", "p2"),
                         ("index_mismatch", "p3")]


def test_status_counts_the_items_published_inside_the_shards(tmp_path: Path) -> None:
    clock = ManualClock()
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store = _store(hub, clock, tmp_path)
        store.publish(Batch("c1", items=planar_items(tmp_path / "b1", ["s1", "s2", "s3"]), units_done=[]))
        store.publish(Batch("c1", items=planar_items(tmp_path / "b2", ["s4", "s5"]), units_done=[]))
        tars = [p for p in hub.files(REPO) if p.endswith(".tar")]
        assert len(tars) >= 2  # one splat tar per batch at least
        report = dataset_status(store.admin(), clock())
        assert report.published == 5
        assert {c.client: c.published for c in report.clients} == {"c1": 5}


def test_gallery_builds_each_items_media_from_its_shard_members(tmp_path: Path) -> None:
    clock = ManualClock()
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store = _store(hub, clock, tmp_path)
        store.publish(Batch("c1", items=planar_items(tmp_path / "b", ["g1", "g2"]), units_done=[]))
        admin = store.admin()
        rows = list(admin.rows())
        assert all(r.shard_path and not r.image_path for r in rows)
        out = tmp_path / "site"
        result = build_gallery(rows, admin, out, runs=[], events=[], options=GalleryOptions(viewer=False))
        assert result.skipped == [] and result.items == 2 and result.rendered == 2
        for row in rows:
            media = out / "media" / row.id
            assert read_ply(media / "splat.ply").count == row.num_gaussians > 0
            with Image.open(media / "photo.jpg") as photo:
                assert photo.format == "JPEG" and max(photo.size) <= 480
                assert abs(photo.width / photo.height - row.width / row.height) < 0.05
            with Image.open(media / "preview.jpg") as preview:
                assert preview.format == "JPEG" and preview.width > 0
            assert (out / "items" / f"{row.id}.html").is_file()
        again = build_gallery(rows, admin, out, runs=[], events=[], options=GalleryOptions(viewer=False))
        assert again.reused == 2 and again.rendered == 0


def test_verify_names_an_id_the_parquet_index_holds_twice(tmp_path: Path) -> None:
    """A copy of an index file under another name: the ids still match as sets, but `load_dataset(repo)`
    would give those items twice; verify names each repeated id."""
    clock = ManualClock()
    with HubEmulator(clock=clock, gitattributes=HUB_DATASET_GITATTRIBUTES) as hub:
        store, admin, parquet = _two_steps(hub, clock, tmp_path, ["d1", "d2"], ["d3"])
        first = next(p for p in parquet if set(read_ids(io.BytesIO(hub.files(REPO)[p]))) == {"d1", "d2"})
        copy = first.rsplit("/", 1)[0] + "/" + "e" * 20 + ".parquet"
        HfApi(endpoint=hub.url, token=TOKEN).upload_file(path_or_fileobj=hub.files(REPO)[first], path_in_repo=copy,
                                                         repo_id=REPO, repo_type="dataset")
        problems = admin.verify(clock()).problems
        assert sorted((p.kind, p.subject) for p in problems) == [("index_mismatch", "d1"), ("index_mismatch", "d2")]
        assert all("in the Parquet index 2 times" in p.detail for p in problems)
