"""NDC Gaussians from SHARP's network → metric Gaussians in SHARP's PLY layout. Pure.

The maths is ml-sharp's unprojection (identity extrinsics, principal point at the image centre),
which reduces to the diagonal map ``D = diag(W / 2f, H / 2f, 1)``:

* means ``m' = D m``;
* covariances ``Σ' = D R diag(s²) Rᵀ D`` (``R`` from the quaternion, ``s`` the std-dev scales),
  decomposed again into a proper rotation (det +1, written as a w-first quaternion) and
  std-dev scales, largest first, as upstream's SVD orders them;
* ``f_dc = (srgb(c) − 0.5) / C0``, ``opacity = logit(o)``, ``scale = ln(s')``.

Upstream copies every covariance to the CPU in float64 and runs an SVD plus SciPy per Gaussian.
Here the 3×3 symmetric eigenproblem is solved in closed form, batched, in float32:

1. the eigenvalues of the scaled matrix by the trigonometric formula;
2. the eigenvector of whichever extreme eigenvalue is better separated, from the largest
   cross product of two rows of ``A − λI`` (accurate because that eigenvalue is isolated);
3. the remaining 2×2 problem in the plane orthogonal to it by one exact Jacobi rotation.

Every rotation is orthonormal and right-handed by construction. The residual ``|Av − λv|`` of
step 2 is checked per Gaussian; the rare matrix where it is not at float32 precision is redone
in float64 with ``linalg.eigh``. The smallest eigenvalue is refined from the exact determinant
``det Σ' = (det D · s₀s₁s₂)²`` so very flat Gaussians keep their thickness.

The same code runs on numpy arrays (CPU, in cache-sized chunks) and on torch tensors (on the
prediction device), through a small namespace shim: no per-Gaussian Python loop either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import PermanentError
from .gaussians import SH_C0, Gaussians, disparity_quantiles

CHUNK = 1 << 15  # Gaussians per numpy chunk: its few dozen live 128 KiB temporaries stay in cache
RESIDUAL_TOL = 2e-6  # |Av − λv| relative to the largest diagonal entry, float32 precision
_LAMBDA_FLOOR = 1e-30  # keeps ln(scale) finite for a degenerate (zero-width) Gaussian
_THIRD_TURN = 2.0 * math.pi / 3.0


@dataclass
class NdcSplat:
    """A SHARP prediction for one image, still in NDC (a RawSplat). Pickles cheaply.

    ``means``/``scales`` (N, 3), ``quats`` (N, 4) w first, ``colors`` (N, 3) linear RGB,
    ``opacities`` (N,) in 0..1, all float32; ``focal_px``, ``width``, ``height`` of the original
    image. ``to_gaussians`` runs the numpy unprojection in the post-process worker.
    """

    means: np.ndarray
    scales: np.ndarray
    quats: np.ndarray
    colors: np.ndarray
    opacities: np.ndarray
    focal_px: float
    width: int
    height: int

    def to_gaussians(self) -> Gaussians:
        return unproject(
            self.means, self.scales, self.quats, self.colors, self.opacities,
            focal_px=self.focal_px, width=self.width, height=self.height,
        )


def unproject(
    means: np.ndarray,
    scales: np.ndarray,
    quats: np.ndarray,
    colors: np.ndarray,
    opacities: np.ndarray,
    *,
    focal_px: float,
    width: int,
    height: int,
    chunk: int = CHUNK,
    residual_tol: float = RESIDUAL_TOL,
) -> Gaussians:
    """Unproject one image's NDC Gaussians on the CPU (numpy, float32) into SHARP's PLY layout.

    Raises ``PermanentError`` (reason ``non_finite_prediction``) when the prediction holds NaN or
    infinite values, since no valid splat can be written from it.
    """
    n = _check_shapes(means, scales, quats, colors, opacities)
    dx, dy = _diagonal(focal_px, width, height)
    comps = [np.ascontiguousarray(a, dtype=np.float32).T for a in (means, scales, quats, colors)]
    op = np.ascontiguousarray(opacities, dtype=np.float32).reshape(n)
    out = np.empty((n, 14), dtype=np.float32)
    # Bad values (NaN, a zero quaternion) are detected explicitly below; numpy need not warn.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for start in range(0, n, chunk):
            sl = slice(start, min(n, start + chunk))
            # Row views of the transposed (3, N) arrays are strided; one dense copy per chunk.
            m, s, q, c = (np.ascontiguousarray(a[:, sl]) for a in comps)
            block = np.empty((14, sl.stop - sl.start), dtype=np.float32)
            _vertex_block(_NUMPY, block, m, s, q, c, op[sl], dx, dy, residual_tol)
            out[sl] = block.T  # one interleaving pass instead of 14 strided column writes
    return Gaussians(vertices=out, focal_px=float(focal_px), width=int(width), height=int(height),
                     disparity=disparity_quantiles(out[:, 2]))


def unproject_torch(
    means: Any,
    scales: Any,
    quats: Any,
    colors: Any,
    opacities: Any,
    *,
    focal_px: float,
    width: int,
    height: int,
    residual_tol: float = RESIDUAL_TOL,
) -> Gaussians:
    """The same unprojection on torch tensors on their own device (the GPU); numpy comes back.

    All maths, the disparity quantiles included, runs on the tensors' device; one (N, 14) float32
    block is copied to the host at the end.
    """
    import torch  # only the GPU path needs torch; the CPU path stays numpy-only

    n = _check_shapes(means, scales, quats, colors, opacities)
    dx, dy = _diagonal(focal_px, width, height)
    comps = [a.to(torch.float32).T.contiguous() for a in (means, scales, quats, colors)]
    op = opacities.to(torch.float32).reshape(n)
    block = torch.empty((14, n), dtype=torch.float32, device=means.device)
    _vertex_block(_TorchOps(torch), block, *comps, op, dx, dy, residual_tol)
    out = block.T.contiguous()
    inv = 1.0 / out[:, 2]
    qs = torch.quantile(inv, torch.tensor([0.1, 0.9], dtype=torch.float32, device=inv.device))
    lo, hi = (float(v) for v in qs.cpu())
    return Gaussians(vertices=out.cpu().numpy(), focal_px=float(focal_px), width=int(width),
                     height=int(height), disparity=(lo, hi))


def _check_shapes(means: Any, scales: Any, quats: Any, colors: Any, opacities: Any) -> int:
    n = int(means.shape[0])
    want = {"means": (means, 3), "scales": (scales, 3), "quats": (quats, 4), "colors": (colors, 3)}
    for name, (arr, k) in want.items():
        if tuple(arr.shape) != (n, k):
            raise ValueError(f"{name} must be ({n}, {k}), got {tuple(arr.shape)}")
    if int(np.prod(tuple(opacities.shape))) != n:
        raise ValueError(f"opacities must hold {n} values, got shape {tuple(opacities.shape)}")
    return n


def _diagonal(focal_px: float, width: int, height: int) -> tuple[float, float]:
    if not (focal_px > 0 and width > 0 and height > 0):
        raise ValueError(f"need a positive focal length and size, got f={focal_px} {width}x{height}")
    return width / (2.0 * focal_px), height / (2.0 * focal_px)


# ---------------------------------------------------------------------------------------------
# array namespace shim: numpy and torch spell a few things differently


class _NumpyOps:
    where = staticmethod(np.where)
    sqrt = staticmethod(np.sqrt)
    abs = staticmethod(np.abs)
    acos = staticmethod(np.arccos)
    cos = staticmethod(np.cos)
    log = staticmethod(np.log)
    power = staticmethod(np.power)
    isfinite = staticmethod(np.isfinite)
    nonzero = staticmethod(np.flatnonzero)

    @staticmethod
    def clip(x: Any, lo: float | None, hi: float | None) -> Any:
        return np.clip(x, lo, hi)

    @staticmethod
    def all_true(x: Any) -> bool:
        return bool(np.all(x))

    @staticmethod
    def to64(x: Any) -> Any:
        return np.asarray(x, dtype=np.float64)

    @staticmethod
    def to32(x: Any) -> Any:
        return np.asarray(x, dtype=np.float32)

    @staticmethod
    def stack(xs: list[Any], axis: int) -> Any:
        return np.stack(xs, axis=axis)

    @staticmethod
    def eigh(a: Any) -> tuple[Any, Any]:
        return np.linalg.eigh(a)

    @staticmethod
    def det(a: Any) -> Any:
        return np.linalg.det(a)


class _TorchOps:
    def __init__(self, torch: Any) -> None:
        self.t = torch
        self.where = torch.where
        self.sqrt = torch.sqrt
        self.abs = torch.abs
        self.acos = torch.acos
        self.cos = torch.cos
        self.log = torch.log
        self.power = torch.pow
        self.isfinite = torch.isfinite

    def clip(self, x: Any, lo: float | None, hi: float | None) -> Any:
        return self.t.clamp(x, lo, hi)

    def nonzero(self, mask: Any) -> Any:
        return self.t.nonzero(mask).reshape(-1)

    def all_true(self, x: Any) -> bool:
        return bool(self.t.all(x))

    def to64(self, x: Any) -> Any:
        return x.to(self.t.float64)

    def to32(self, x: Any) -> Any:
        return x.to(self.t.float32)

    def stack(self, xs: list[Any], axis: int) -> Any:
        return self.t.stack(xs, dim=axis)

    def eigh(self, a: Any) -> tuple[Any, Any]:
        return self.t.linalg.eigh(a)

    def det(self, a: Any) -> Any:
        return self.t.linalg.det(a)


_NUMPY = _NumpyOps()


# ---------------------------------------------------------------------------------------------
# the vertex block


def _vertex_block(xp: Any, out: Any, m: Any, s: Any, q: Any, c: Any, o: Any,
                  dx: float, dy: float, tol: float) -> None:
    """Fill ``out`` (14, n), one row per PLY property, from component-major inputs m (3, n), s (3, n),
    q (4, n), c (3, n) and o (n,)."""
    finite = [xp.all_true(xp.isfinite(a)) for a in (m, c, o)]
    if not all(finite):
        raise PermanentError("the prediction holds non-finite means, colours or opacities",
                             reason="non_finite_prediction")
    out[0] = m[0] * dx
    out[1] = m[1] * dy
    out[2] = m[2]
    for k in range(3):
        out[3 + k] = _f_dc(xp, c[k])
    p = xp.clip(o, 1e-6, 1.0 - 1e-6)
    out[6] = xp.log(p / (1.0 - p))
    lam, rot = _decompose(xp, (q[0], q[1], q[2], q[3]), (s[0], s[1], s[2]), dx, dy, tol)
    for k in range(3):
        out[7 + k] = 0.5 * xp.log(xp.clip(lam[k], _LAMBDA_FLOOR, None))
    quat = _quaternion(xp, rot)
    for k in range(4):
        out[10 + k] = quat[k]


def _f_dc(xp: Any, lin: Any) -> Any:
    low = lin * 12.92
    high = 1.055 * xp.power(xp.clip(lin, 0.0031308, None), 1.0 / 2.4) - 0.055
    return (xp.where(lin <= 0.0031308, low, high) - 0.5) * (1.0 / SH_C0)


def _rotation(xp: Any, q: tuple[Any, ...]) -> list[list[Any]]:
    w, x, y, z = q
    inv = 1.0 / xp.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w * inv, x * inv, y * inv, z * inv
    xx, yy, zz = x * x, y * y, z * z
    xy, xz, yz = x * y, x * z, y * z
    wx, wy, wz = w * x, w * y, w * z
    return [
        [1.0 - 2.0 * (yy + zz), 2.0 * (xy - wz), 2.0 * (xz + wy)],
        [2.0 * (xy + wz), 1.0 - 2.0 * (xx + zz), 2.0 * (yz - wx)],
        [2.0 * (xz - wy), 2.0 * (yz + wx), 1.0 - 2.0 * (xx + yy)],
    ]


def _covariance(xp: Any, q: tuple[Any, ...], s: tuple[Any, ...], dx: float, dy: float) -> list[Any]:
    """The six entries (00, 11, 22, 01, 02, 12) of Σ' = M Mᵀ with M = D R diag(s)."""
    r = _rotation(xp, q)
    d = (dx, dy, 1.0)
    mm = [[r[i][j] * (s[j] * d[i]) for j in range(3)] for i in range(3)]

    def dot(i: int, j: int) -> Any:
        return mm[i][0] * mm[j][0] + mm[i][1] * mm[j][1] + mm[i][2] * mm[j][2]

    return [dot(0, 0), dot(1, 1), dot(2, 2), dot(0, 1), dot(0, 2), dot(1, 2)]


def _decompose(xp: Any, q: tuple[Any, ...], s: tuple[Any, ...], dx: float, dy: float,
               tol: float) -> tuple[list[Any], list[list[Any]]]:
    """Eigenvalues (largest first) and a proper rotation whose columns are the eigenvectors."""
    a00, a11, a22, a01, a02, a12 = _covariance(xp, q, s, dx, dy)
    # Scale so the largest diagonal entry is 1 (it bounds every entry of a PSD matrix).
    big = xp.where(a00 > a11, a00, a11)
    big = xp.where(big > a22, big, a22)
    big = xp.where(big > 0, big, 1.0)
    inv = 1.0 / big
    a = [a00 * inv, a11 * inv, a22 * inv, a01 * inv, a02 * inv, a12 * inv]
    v, lam_v, res2 = _extreme_vector(xp, a)
    lam, cols = _rest_of_basis(xp, a, v, lam_v)
    lam, cols = _sort_desc(xp, lam, cols)
    # det of the scaled Σ', from the inputs; each factor is O(1) so nothing under/overflows.
    r = xp.sqrt(inv)
    root = (s[0] * r) * (s[1] * r) * (s[2] * r) * (dx * dy)
    lam[2] = _refine_smallest(xp, lam, root * root)
    lam = [x * big for x in lam]
    bad = xp.nonzero(~(res2 <= tol * tol))
    if int(bad.shape[0]):
        _fallback64(xp, bad, q, s, dx, dy, lam, cols)
    return lam, cols


def _extreme_vector(xp: Any, a: list[Any]) -> tuple[list[Any], Any, Any]:
    """Unit eigenvector of the better-isolated extreme eigenvalue, its eigenvalue, residual²."""
    a00, a11, a22, a01, a02, a12 = a
    mean = (a00 + a11 + a22) * (1.0 / 3.0)
    b00, b11, b22 = a00 - mean, a11 - mean, a22 - mean
    p = xp.sqrt((b00 * b00 + b11 * b11 + b22 * b22 + 2.0 * (a01 * a01 + a02 * a02 + a12 * a12)) / 6.0)
    ip = 1.0 / xp.where(p > 0, p, 1.0)
    c00, c11, c22, c01, c02, c12 = b00 * ip, b11 * ip, b22 * ip, a01 * ip, a02 * ip, a12 * ip
    half = 0.5 * (c00 * (c11 * c22 - c12 * c12) - c01 * (c01 * c22 - c12 * c02)
                  + c02 * (c01 * c12 - c11 * c02))
    half = xp.clip(half, -1.0, 1.0)
    angle = xp.acos(half) * (1.0 / 3.0)
    # half >= 0: the largest eigenvalue is the isolated one; else the smallest.
    beta = xp.where(half >= 0, 2.0 * xp.cos(angle), 2.0 * xp.cos(angle + _THIRD_TURN))
    rows = [(c00 - beta, c01, c02), (c01, c11 - beta, c12), (c02, c12, c22 - beta)]
    best = _cross(rows[0], rows[1])
    best_n = _norm2(best)
    for i, j in ((0, 2), (1, 2)):
        cand = _cross(rows[i], rows[j])
        cn = _norm2(cand)
        take = cn > best_n
        best = [xp.where(take, cand[k], best[k]) for k in range(3)]
        best_n = xp.where(take, cn, best_n)
    ok = best_n > 0
    invn = 1.0 / xp.sqrt(xp.where(ok, best_n, 1.0))
    v = [xp.where(ok, best[0] * invn, 1.0), xp.where(ok, best[1] * invn, 0.0),
         xp.where(ok, best[2] * invn, 0.0)]
    av = _matvec(a, v)
    lam = av[0] * v[0] + av[1] * v[1] + av[2] * v[2]
    res = [av[k] - lam * v[k] for k in range(3)]
    return v, lam, _norm2(res)


def _rest_of_basis(xp: Any, a: list[Any], v: list[Any], lam_v: Any) -> tuple[list[Any], list[list[Any]]]:
    """Solve the 2×2 problem orthogonal to ``v`` with one Jacobi rotation."""
    v0, v1, v2 = v
    use_x = xp.abs(v0) > xp.abs(v1)
    u0 = xp.where(use_x, -v2, 0.0)
    u1 = xp.where(use_x, 0.0, v2)
    u2 = xp.where(use_x, v0, -v1)
    iu = 1.0 / xp.sqrt(u0 * u0 + u1 * u1 + u2 * u2)
    u = [u0 * iu, u1 * iu, u2 * iu]
    w = _cross(v, u)  # (v, u, w) is right-handed
    au, aw = _matvec(a, u), _matvec(a, w)
    m00 = u[0] * au[0] + u[1] * au[1] + u[2] * au[2]
    m01 = u[0] * aw[0] + u[1] * aw[1] + u[2] * aw[2]
    m11 = w[0] * aw[0] + w[1] * aw[1] + w[2] * aw[2]
    # One Jacobi rotation (tangent form, no trigonometry): J = [[c, s], [-s, c]] makes JᵀMJ diagonal.
    off = m01 != 0
    tau = (m11 - m00) / (2.0 * xp.where(off, m01, 1.0))
    t = 1.0 / (xp.abs(tau) + xp.sqrt(1.0 + tau * tau))  # overflow to inf gives t = 0, the right limit
    t = xp.where(off, xp.where(tau < 0, -t, t), 0.0)
    cs = 1.0 / xp.sqrt(1.0 + t * t)
    sn = t * cs
    e1 = [cs * u[k] - sn * w[k] for k in range(3)]
    e2 = [sn * u[k] + cs * w[k] for k in range(3)]
    l1 = m00 - t * m01
    l2 = m11 + t * m01
    return [lam_v, l1, l2], [v, e1, e2]


def _sort_desc(xp: Any, lam: list[Any], cols: list[list[Any]]) -> tuple[list[Any], list[list[Any]]]:
    """Sort eigenpairs largest first; each swap negates one column so det stays +1."""
    lam, cols = list(lam), [list(c) for c in cols]
    for i, j in ((0, 1), (1, 2), (0, 1)):
        swap = lam[j] > lam[i]
        li, lj = lam[i], lam[j]
        lam[i], lam[j] = xp.where(swap, lj, li), xp.where(swap, li, lj)
        ci, cj = cols[i], cols[j]
        cols[i] = [xp.where(swap, cj[k], ci[k]) for k in range(3)]
        cols[j] = [xp.where(swap, -ci[k], cj[k]) for k in range(3)]
    return lam, cols


def _refine_smallest(xp: Any, lam: list[Any], det: Any) -> Any:
    """λ_min = det / (λ_max λ_mid) where that is the more accurate value (λ_min ≪ λ_mid)."""
    prod = lam[0] * lam[1]
    use = (lam[2] < 0.5 * lam[1]) & (prod > 0)
    return xp.where(use, det / xp.where(use, prod, 1.0), lam[2])


def _fallback64(xp: Any, idx: Any, q: tuple[Any, ...], s: tuple[Any, ...], dx: float, dy: float,
                lam: list[Any], cols: list[list[Any]]) -> None:
    """Redo the few matrices the float32 path could not resolve with float64 ``eigh``, in place."""
    q64 = tuple(xp.to64(x[idx]) for x in q)
    s64 = tuple(xp.to64(x[idx]) for x in s)
    e = _covariance(xp, q64, s64, dx, dy)
    if not xp.all_true(xp.isfinite(xp.stack(e, 0))):
        raise PermanentError("the prediction holds non-finite scales or rotations",
                             reason="non_finite_prediction")
    mat = xp.stack([xp.stack([e[0], e[3], e[4]], -1), xp.stack([e[3], e[1], e[5]], -1),
                    xp.stack([e[4], e[5], e[2]], -1)], -2)
    w, vec = xp.eigh(mat)  # ascending eigenvalues, eigenvectors in columns
    # Reversing the columns (largest first) is one swap, so it flips det; fix the last column.
    sign = xp.where(xp.det(vec) > 0, -1.0, 1.0)
    order = (2, 1, 0)
    for dst, src in enumerate(order):
        lam[dst][idx] = xp.to32(w[:, src])
        flip = sign if dst == 2 else 1.0
        for k in range(3):
            cols[dst][k][idx] = xp.to32(vec[:, k, src] * flip)


def _quaternion(xp: Any, cols: list[list[Any]]) -> list[Any]:
    """w-first unit quaternion (w ≥ 0) of the rotation whose columns are ``cols`` (Shepperd)."""
    r = [[cols[j][i] for j in range(3)] for i in range(3)]  # r[i][j] = row i, column j
    tw = 1.0 + r[0][0] + r[1][1] + r[2][2]
    tx = 1.0 + r[0][0] - r[1][1] - r[2][2]
    ty = 1.0 - r[0][0] + r[1][1] - r[2][2]
    tz = 1.0 - r[0][0] - r[1][1] + r[2][2]
    # 4·q_i·q_j for every pair; the diagonal is the t's.
    pwx, pwy, pwz = r[2][1] - r[1][2], r[0][2] - r[2][0], r[1][0] - r[0][1]
    pxy, pxz, pyz = r[0][1] + r[1][0], r[0][2] + r[2][0], r[1][2] + r[2][1]
    table = [[tw, pwx, pwy, pwz], [pwx, tx, pxy, pxz], [pwy, pxy, ty, pyz], [pwz, pxz, pyz, tz]]
    # Pick, per rotation, the largest t: q = row_k / (2 sqrt(t_k)) is then well conditioned.
    k_t = tw
    pick = [list(table[0])]
    for k in (1, 2, 3):
        take = table[k][k] > k_t
        k_t = xp.where(take, table[k][k], k_t)
        pick.append([xp.where(take, table[k][j], pick[-1][j]) for j in range(4)])
    row = pick[-1]
    scale = 0.5 / xp.sqrt(xp.clip(k_t, 1e-30, None))
    sign = xp.where(row[0] < 0, -scale, scale)  # row[0] = 4·q_k·w: sign of w relative to q_k
    return [x * sign for x in row]


def _cross(a: Any, b: Any) -> list[Any]:
    return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]


def _norm2(a: Any) -> Any:
    return a[0] * a[0] + a[1] * a[1] + a[2] * a[2]


def _matvec(a: list[Any], v: list[Any]) -> list[Any]:
    a00, a11, a22, a01, a02, a12 = a
    return [a00 * v[0] + a01 * v[1] + a02 * v[2],
            a01 * v[0] + a11 * v[1] + a12 * v[2],
            a02 * v[0] + a12 * v[1] + a22 * v[2]]
