"""The ``dataset_info.features`` a dataset card declares for its WebDataset configs (``splats``,
``ply``). Pure: member field names in, the YAML structure of ``datasets``' features out.

``datasets`` types a WebDataset from its first five samples unless the card declares the features:
a field that is null there (an item without a description or licence) then fails to cast a later
string, a member missing from the first tar (a preview) drops the column for the whole dataset, and
a ``.ply`` member becomes a ``Mesh`` that needs trimesh and keeps only positions. Declared, every
member reads as what it is: photos and previews as images, ``.json`` as its typed struct, splat
files as bytes, and a member that one tar lacks as null.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from .parquet_index import member_json_type

__all__ = ["IMAGE_FIELDS", "feature_type", "shard_features"]

IMAGE_FIELDS = frozenset({"jpg", "jpeg", "png", "webp"})
_SCALARS = {pa.string(): "string", pa.int64(): "int64", pa.float64(): "float64", pa.binary(): "binary",
            pa.bool_(): "bool"}
_SAMPLE_COLUMNS = ("__key__", "__url__")  # what the WebDataset builder adds to every sample


def feature_type(t: pa.DataType) -> dict[str, Any]:
    """One Arrow type as ``datasets``' YAML (``{"dtype": …}``, ``{"list": …}`` or ``{"struct": […]}``)."""
    if pa.types.is_struct(t):
        return {"struct": [{"name": t.field(i).name, **feature_type(t.field(i).type)} for i in range(t.num_fields)]}
    if pa.types.is_list(t):
        inner = feature_type(t.value_type)
        # A list of scalars is written ``list: string``, of structs ``list: [fields]``, of lists ``list: {list: …}``.
        return {"list": inner.get("dtype", inner.get("struct", inner))}
    if t not in _SCALARS:
        raise ValueError(f"no datasets feature for Arrow type {t}")
    return {"dtype": _SCALARS[t]}


def _member_feature(field_name: str) -> dict[str, Any]:
    ext = field_name.rsplit(".", 1)[-1].lower()
    if ext in IMAGE_FIELDS:
        return {"dtype": "image"}
    if ext == "json":
        return feature_type(member_json_type())
    return {"dtype": "binary"}  # .spz, .sog, .html, .ply: the file's bytes, as published


def shard_features(fields: Iterable[str]) -> list[dict[str, Any]]:
    """The features of a WebDataset config whose samples carry the members ``fields`` (``jpg``, ``spz``…):
    one column per member, then the builder's ``__key__`` and ``__url__``."""
    out = [{"name": name, **_member_feature(name)} for name in sorted(set(fields))]
    return out + [{"name": name, "dtype": "string"} for name in _SAMPLE_COLUMNS]
