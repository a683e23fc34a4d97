"""FolderSource: sorted walk, content-hash ids, listing-hash unit keys, lazy hashing, duplicates."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from emulators.files import jpeg_bytes
from sharp_dataset_pipeline.errors import ConfigError
from sharp_dataset_pipeline.records import Item
from sharp_dataset_pipeline.sources.folder import FolderSource


def _all_items(src: FolderSource) -> list[Item]:
    return [item for unit in src.units() for item in src.items(unit)]


def _photo(path: Path, seed: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = jpeg_bytes(32, 24, seed=seed)
    path.write_bytes(data)
    return data


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    _photo(root / "b.jpg", 1)
    _photo(root / "a.JPG", 2)
    _photo(root / "sub" / "c.png", 3)  # JPEG bytes under a .png name: the extension only selects files
    _photo(root / ".hidden.jpg", 4)
    _photo(root / ".cache" / "d.jpg", 5)
    (root / "notes.txt").write_text("x")
    (root / "sub" / "raw.xyz").write_text("x")
    return root


def test_walk_is_sorted_recursive_and_skips_hidden_and_non_images(photos: Path) -> None:
    src = FolderSource(photos, range_size=10)
    items = _all_items(src)
    assert [i.meta["source_path"] for i in items] == ["a.JPG", "b.jpg", "sub/c.png"]
    assert [i.offset for i in items] == [0, 1, 2]
    assert src.skipped_counts() == {"not_an_image_extension": 2, "hidden": 2}  # .hidden.jpg and .cache/
    first = items[0]
    assert first.source == "folder" and first.meta["license"] == "" and first.ext_hint == "jpg"
    assert Path(first.path).is_absolute() and Path(first.path).read_bytes() == (photos / "a.JPG").read_bytes()


def test_id_is_the_content_hash_and_survives_a_rename(photos: Path) -> None:
    before = {i.meta["source_path"]: i.id for i in _all_items(FolderSource(photos))}
    data = (photos / "b.jpg").read_bytes()
    assert before["b.jpg"] == hashlib.sha256(data).hexdigest()[:16]
    (photos / "b.jpg").rename(photos / "zz_renamed.jpg")
    after = {i.meta["source_path"]: i.id for i in _all_items(FolderSource(photos))}
    assert after["zz_renamed.jpg"] == before["b.jpg"]
    assert set(after.values()) == set(before.values())


def test_adding_a_photo_changes_unit_keys_not_ids(photos: Path) -> None:
    old = FolderSource(photos, range_size=2)
    old_keys, old_ids = [u.key for u in old.units()], {i.id for i in _all_items(old)}
    _photo(photos / "aa_new.jpg", 9)
    new = FolderSource(photos, range_size=2)
    new_keys, new_items = [u.key for u in new.units()], _all_items(new)
    assert not set(old_keys) & set(new_keys)
    assert old_ids < {i.id for i in new_items}
    assert len(new_items) == len(old_ids) + 1
    assert [u.key for u in FolderSource(photos, range_size=2).units()] == new_keys  # deterministic


def test_unit_keys_and_bounds(photos: Path) -> None:
    units = list(FolderSource(photos, range_size=2).units())
    assert [(u.start, u.stop) for u in units] == [(0, 2), (2, 4)]
    prefix, digest, span = units[1].key.split("/")
    assert prefix == "folder" and len(digest) == 12 and span == "000002-000003"
    assert units[0].key == f"folder/{digest}/000000-000001"


def test_duplicate_content_yields_one_item_whichever_unit_is_read(tmp_path: Path) -> None:
    root = tmp_path / "dups"
    data = _photo(root / "a.jpg", 1)
    _photo(root / "b.jpg", 2)
    (root / "c.jpg").write_bytes(data)  # same bytes as a.jpg, in the second unit
    fresh = FolderSource(root, range_size=2)
    second = list(fresh.units())[1]
    assert list(fresh.items(second)) == []  # skipped without reading unit 0 first
    src = FolderSource(root, range_size=2)
    assert [i.meta["source_path"] for i in _all_items(src)] == ["a.jpg", "b.jpg"]
    assert src.skipped_counts()["duplicate_content"] == 1


def test_units_only_list_and_files_are_hashed_per_unit(photos: Path) -> None:
    src = FolderSource(photos, range_size=1)
    units = list(src.units())
    (photos / "sub" / "c.png").unlink()  # vanishes after listing: units() did not need its bytes
    assert [i.meta["source_path"] for i in src.items(units[0])] == ["a.JPG"]
    assert list(src.items(units[2])) == []
    assert src.skipped_counts()["unreadable"] == 1


def test_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        list(FolderSource(tmp_path / "nope").units())


def test_empty_folder_has_no_units(tmp_path: Path) -> None:
    assert list(FolderSource(tmp_path).units()) == []


def test_a_file_replaced_by_a_fifo_after_the_listing_is_skipped_without_blocking(tmp_path: Path) -> None:
    import os

    root = tmp_path / "photos"
    _photo(root / "a.jpg", 1)
    _photo(root / "b.jpg", 2)
    src = FolderSource(root, range_size=10)
    units = list(src.units())  # the listing saw two regular files
    (root / "a.jpg").unlink()
    os.mkfifo(root / "a.jpg")  # a blocking open() would wait here for a writer for ever
    items = [i for u in units for i in src.items(u)]
    assert [i.meta["source_path"] for i in items] == ["b.jpg"]
    assert src.skipped_counts() == {"unreadable": 1}


def test_a_folder_symlink_and_an_unlistable_folder_are_counted_not_silent(tmp_path: Path) -> None:
    """Folder symlinks are not followed (a loop would never end) and a folder that cannot be listed is not
    read: both are counted under a reason, so the summary says photos were left out."""
    import os

    root, other = tmp_path / "photos", tmp_path / "elsewhere"
    _photo(root / "real" / "r.jpg", 1)
    _photo(other / "o.jpg", 2)
    (root / "linked").symlink_to(other, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)
    src = FolderSource(root)
    assert [i.meta["source_path"] for i in _all_items(src)] == ["real/r.jpg"]
    assert src.skipped_counts() == {"folder_symlink": 2}
    if os.geteuid() != 0:  # root reads a folder whatever its mode
        _photo(root / "closed" / "c.jpg", 3)
        (root / "closed").chmod(0)
        try:
            again = FolderSource(root)
            assert [i.meta["source_path"] for i in _all_items(again)] == ["real/r.jpg"]
            assert again.skipped_counts() == {"folder_symlink": 2, "unreadable": 1}
        finally:
            (root / "closed").chmod(0o755)
