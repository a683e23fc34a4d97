"""The dataset card's columns table: what each index column holds, with the typed Parquet index's types
where the dataset has one. Pure."""

from __future__ import annotations

import pyarrow as pa

from .parquet_index import index_schema

__all__ = ["columns_section"]

_COLUMNS = {
    "id": "Stable item id (Unsplash photo id, or a content hash for local photos).",
    "source": "Where the photo came from (e.g. `unsplash`, `folder`, `manifest`).",
    "unit": "The work unit (slice of the source's enumeration) the item belonged to.",
    "image_path": "Repo path of the original photo, byte for byte as downloaded.",
    "image_size": "Size of that file in bytes.",
    "image_sha256": "SHA-256 of that file.",
    "ply_path": "Repo path of the Gaussian splat PLY.",
    "ply_size": "Size of the PLY in bytes.",
    "ply_sha256": "SHA-256 of the PLY.",
    "extra_files": "JSON list of further files (compressed formats, previews) with path, size, hash.",
    "width": "Image width in pixels.",
    "height": "Image height in pixels.",
    "focal_px": "Focal length in pixels used for the prediction.",
    "focal_source": "Where the focal length came from (EXIF, a hint, or a default).",
    "num_gaussians": "Number of Gaussians in the PLY.",
    "predictor": "Which predictor made the splat (`sharp`, `sharp-cli`; `planar` is a demo, not SHARP).",
    "model_version": "Model / checkpoint version of the predictor.",
    "source_url": "URL the photo was downloaded from (empty for local files).",
    "source_path": "Path of a local photo: relative to its folder, or a manifest's `file:` URL's path (empty for"
                   " downloads).",
    "page_url": "Web page of the photo.",
    "unsplash_url": "Unsplash page of the photo (Unsplash items only).",
    "user_name": "Photographer's name, for attribution.",
    "user_username": "Photographer's username on the source site.",
    "user_url": "Photographer's profile page.",
    "license": "Licence of the photo.",
    "description": "Description given by the photographer.",
    "alt_description": "Alternative text of the photo.",
    "tags": "Tags, as one comma-separated string.",
    "topics": "Topics, as one comma-separated string.",
    "color": "Dominant colour (hex) reported by the source.",
    "blur_hash": "BlurHash placeholder reported by the source.",
    "created_at": "When the photo was created or uploaded (source's timestamp).",
    "processed_at": "When the splat was made (UTC, ISO 8601).",
    "client_id": "Which client machine made and published the item.",
    "gsplat_url": "Optional gsplat.org viewer link.",
    "gsplat_share_id": "Optional gsplat.org share id.",
    "gsplat_model_id": "Optional gsplat.org model id.",
}


# What the typed Parquet index says differently from the JSONL rows, and the columns only it has.
_TYPED_COLUMNS = {
    "extra_files": "Further files (compressed formats, previews) with path, kind, size and SHA-256.",
    "tags": "Tags, each whole.",
    "topics": "Topics, each whole.",
    "layout": "The dataset's layout: `shards` or `files`.",
    "key": "The item's sample key in the shards (its id, encoded without dots).",
    "shard_path": "The tar (`data/shards/…`) that holds the item's photo, splat, json and preview.",
    "ply_shard_path": "The tar (`data/ply/…`) that holds the item's full PLY, when published.",
    "members": "Each tar member of the item: shard, name, field, data offset, size and SHA-256.",
    "preview": "A small preview image of the splat.",
}


def _typed_type(t: pa.DataType) -> str:
    if pa.types.is_list(t):
        inner = t.value_type
        if pa.types.is_struct(inner):
            return "list of {" + ", ".join(inner.field(i).name for i in range(inner.num_fields)) + "}"
        return f"list of {_typed_type(inner)}s"
    if pa.types.is_struct(t):
        return "image" if {t.field(i).name for i in range(t.num_fields)} == {"bytes", "path"} else "struct"
    return "float64" if pa.types.is_float64(t) else str(t)


def columns_section(feats: dict[str, str], typed: bool) -> list[str]:
    """The columns table: the typed Parquet index's columns (its types, null when unknown), else the
    JSONL rows' (every value a string or number, empty when unknown)."""
    lines = ["## Columns", ""]
    if typed:
        lines += ["The index's Parquet columns (a value is null when unknown):", ""]
        columns = [(f.name, _typed_type(f.type),
                    _TYPED_COLUMNS.get(f.name) or _COLUMNS.get(f.name, "").replace("(empty for", "(null for"))
                   for f in index_schema()]
    else:
        columns = [(name, dtype, _COLUMNS.get(name, "")) for name, dtype in feats.items()]
    lines += ["| column | type | meaning |", "| --- | --- | --- |"]
    lines += [f"| `{name}` | {dtype} | {meaning} |" for name, dtype, meaning in columns]
    lines.append("")
    return lines
