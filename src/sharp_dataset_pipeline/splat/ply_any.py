"""Read any 3D Gaussian splat PLY (SHARP's, the original 3DGS training code's, other tools'), by property name.

SHARP's own layout goes through ``ply.read_ply`` (every check, camera kept). Anything else is read from the
``vertex`` element by name: ``x y z``, ``f_dc_0..2``, ``opacity``, ``scale_0..2``, ``rot_0..3`` are required,
``f_rest_*`` (9, 24 or 45 of them: SH degree 1 to 3) are kept, other properties (normals, ...) are ignored.
A PLY that is not a Gaussian splat (a mesh, a point cloud, a PlayCanvas compressed PLY) is refused with
:class:`~.ply.InvalidSplat` saying what is missing. Pure apart from reading the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .gaussians import VERTEX_PROPERTIES, Gaussians
from .ply import InvalidSplat, read_ply
from .spz import SplatArrays, arrays_from_gaussians

_MAX_HEADER = 1 << 20
_FORMAT = "format binary_little_endian 1.0"
_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "<i2", "int16": "<i2",
          "ushort": "<u2", "uint16": "<u2", "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4",
          "float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8"}
REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
            "rot_0", "rot_1", "rot_2", "rot_3")
_REST_COUNTS = (0, 9, 24, 45)


@dataclass(frozen=True)
class SplatPly:
    """A splat read from a PLY: ``arrays`` with every SH band the file has; ``gaussians`` the same scene
    in SHARP's layout (SH degree 0; the camera when the file is SHARP's, else a zero camera)."""

    arrays: SplatArrays
    gaussians: Gaussians
    sharp_layout: bool


@dataclass(frozen=True)
class _Element:
    name: str
    count: int
    props: list[tuple[str, str]]  # (numpy dtype, name); a list property has dtype ""


def _header(path: Path) -> tuple[list[_Element], int]:
    with open(path, "rb") as f:
        head = f.read(_MAX_HEADER)
    if not head.startswith((b"ply\n", b"ply\r\n")):
        raise InvalidSplat(f"not a PLY file: starts with {head[:16]!r}")
    end = head.find(b"end_header")
    if end < 0:
        raise InvalidSplat("no 'end_header' line in the first MB")
    size = head.index(b"\n", end) + 1
    lines = [ln.strip() for ln in head[:end].decode("ascii", "replace").splitlines()[1:]]
    lines = [ln for ln in lines if ln and not ln.startswith(("comment", "obj_info"))]
    if not lines or lines[0] != _FORMAT:
        raise InvalidSplat(f"only binary little-endian PLY files are read, this one says {lines[:1]}")
    elements: list[_Element] = []
    for line in lines[1:]:
        words = line.split()
        if words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append(_Element(words[1], int(words[2]), []))
        elif words[0] == "property" and elements and len(words) == 3 and words[1] in _TYPES:
            elements[-1].props.append((_TYPES[words[1]], words[2]))
        elif words[:2] == ["property", "list"] and elements:
            elements[-1].props.append(("", words[-1]))
        else:
            raise InvalidSplat(f"unexpected PLY header line {line!r}")
    return elements, size


def _missing_message(vertex: _Element) -> str:
    names = [n for _, n in vertex.props]
    missing = [n for n in REQUIRED if n not in names]
    shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
    hint = ""
    if any(n.startswith("packed_") for n in names):
        hint = " (a PlayCanvas compressed PLY: convert it with splat-transform first)"
    elif {"red", "green", "blue"} & set(names) or not any(n.startswith(("scale_", "rot_")) for n in names):
        hint = " (a point cloud or mesh?)"
    return f"not a Gaussian splat: the vertex element has {shown} but no {', '.join(missing)}{hint}"


def _vertex_block(path: Path) -> np.ndarray:
    elements, offset = _header(path)
    vertex = next((e for e in elements if e.name == "vertex"), None)
    if vertex is None:
        raise InvalidSplat(f"not a Gaussian splat: no vertex element (elements: {[e.name for e in elements]})")
    for e in elements[: elements.index(vertex)]:
        if any(not dt for dt, _ in e.props):
            raise InvalidSplat(f"element {e.name} before the vertices has a list property; cannot locate them")
        offset += e.count * sum(np.dtype(dt).itemsize for dt, _ in e.props)
    if any(not dt for dt, _ in vertex.props):
        raise InvalidSplat("the vertex element has a list property; Gaussian splats have none")
    if any(n not in [p for _, p in vertex.props] for n in REQUIRED):
        raise InvalidSplat(_missing_message(vertex))
    if vertex.count == 0:
        raise InvalidSplat("the splat has no Gaussians (element vertex 0)")
    dtype = np.dtype([(name, dt) for dt, name in vertex.props])
    need = offset + vertex.count * dtype.itemsize
    if os.path.getsize(path) < need:
        raise InvalidSplat(f"truncated: the vertices end at byte {need}, the file has {os.path.getsize(path)}")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=(vertex.count,))


def _columns(block: np.ndarray, names: list[str]) -> np.ndarray:
    out = np.empty((block.shape[0], len(names)), np.float32)
    for i, name in enumerate(names):
        out[:, i] = block[name]
    bad = ~np.isfinite(out)
    if bad.any():
        row, col = (int(k) for k in np.argwhere(bad)[0])
        raise InvalidSplat(f"non-finite value {out[row, col]} at Gaussian {row} property {names[col]}")
    return out


def read_splat_ply(path: Path | str) -> SplatPly:
    """Read a Gaussian splat PLY of any common layout; raise :class:`InvalidSplat` for anything else."""
    path = Path(path)
    elements, _ = _header(path)
    if elements and elements[0].name == "vertex" and [n for _, n in elements[0].props] == list(VERTEX_PROPERTIES):
        try:
            g = read_ply(path, allow_missing_metadata=len(elements) == 1)
            return SplatPly(arrays=arrays_from_gaussians(g), gaussians=g, sharp_layout=True)
        except InvalidSplat:
            pass  # SHARP's vertex layout with other elements after it: read it by name like any other file
    block = _vertex_block(path)
    names = set(block.dtype.names or ())
    rest = [f"f_rest_{i}" for i in range(sum(1 for n in names if n.startswith("f_rest_")))]
    if len(rest) not in _REST_COUNTS or any(n not in names for n in rest):
        raise InvalidSplat(f"{len(rest)} f_rest_* properties; 3DGS files have 0, 9, 24 or 45 (f_rest_0 ...)")
    base = _columns(block, list(REQUIRED))
    sh_rest = _columns(block, rest) if rest else None
    g = Gaussians(vertices=base, focal_px=0.0, width=0, height=0)
    arrays = SplatArrays(positions=base[:, 0:3], colors=base[:, 3:6], alphas=base[:, 6], scales=base[:, 7:10],
                         rotations=base[:, 10:14], sh_rest=sh_rest)
    return SplatPly(arrays=arrays, gaussians=g, sharp_layout=False)
