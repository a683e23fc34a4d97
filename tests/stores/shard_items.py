"""Items post-processed for real (sample photos → the planar predictor → post-processing), for the
sharded-layout store tests; and readers of what a sharded repo snapshot holds."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

from sharp_dataset_pipeline.fetch.fetcher import fetch_item
from sharp_dataset_pipeline.pipeline.stages import PostprocessOptions, postprocess_item
from sharp_dataset_pipeline.predict.planar import PlanarPredictor
from sharp_dataset_pipeline.records import Item, ProcessedItem
from sharp_dataset_pipeline.splat.formats import FormatOptions

SAMPLES = Path(__file__).resolve().parents[2] / "src" / "sharp_dataset_pipeline" / "samples"
NAMES = ("hills.jpg", "boxes.jpg", "checker_floor.jpg", "corridor.jpg", "sunset_trees.jpg", "tabletop_shapes.jpg")


def planar_items(tmp: Path, ids: list[str], *, unit: str = "folder/x/0", resolution: int = 32,
                 formats: tuple[str, ...] = ("spz", "preview", "ply"),
                 meta: dict[str, dict[str, str]] | None = None) -> list[ProcessedItem]:
    """One processed item per id, each from a sample photo (cycled), as a run would publish it; ``meta``:
    more source metadata for some ids (a description, a licence…)."""
    photos, gaussians = tmp / "photos", tmp / "g"
    photos.mkdir(parents=True, exist_ok=True)
    gaussians.mkdir(parents=True, exist_ok=True)
    predictor = PlanarPredictor(resolution=resolution)
    opts = PostprocessOptions(gaussians_dir=gaussians, subdir="folder", fanout=False, predictor="planar",
                              model_version="planar-1", client_id="c1", formats=FormatOptions(formats=formats))
    out = []
    for n, item_id in enumerate(ids):
        src = photos / f"{item_id}.jpg"
        shutil.copy(SAMPLES / NAMES[n % len(NAMES)], src)
        extra = (meta or {}).get(item_id, {})
        item = Item(id=item_id, source="folder", unit=unit, offset=n, path=str(src), meta={"user_name": "Ann", **extra})
        fetched = fetch_item(item, tmp / "img", None, max_pixels=10**8, max_bytes=10**8, attempts=1)
        raw = predictor.predict([fetched])[0]
        out.append(postprocess_item(fetched, raw, opts))  # type: ignore[arg-type]
    return out


def tar_keys(data: bytes) -> list[str]:
    """Sample keys of a WebDataset tar, one per sample, in tar order."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        names = [m.name for m in tf.getmembers() if m.isfile()]
    return list(dict.fromkeys(n.split(".", 1)[0] for n in names))


def members(row: dict) -> list[dict]:
    return json.loads(row["members"] or "[]")
