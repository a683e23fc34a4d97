"""Stand-in for ``sharp.models``: ``PredictorParams``, ``create_predictor`` and a tiny predictor.

Same call shape as ml-sharp's ``RGBGaussianPredictor``: ``forward(image [B,3,S,S] float in 0..1,
disparity_factor [B]) -> Gaussians3D`` in NDC, with ``N = 2·(S/2)²`` Gaussians per image (two
depth layers on a stride-2 grid, as upstream's 2·768² at S = 1536). ``S`` is ``INTERNAL_SIZE``
here (upstream hard-codes 1536); backends read this constant when the package defines it.

Outputs depend on every input pixel's colour and on the image's disparity factor, so a backend
that mixes up images, factors or their order produces visibly different numbers.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..utils.gaussians import Gaussians3D

INTERNAL_SIZE = 16
LAYERS = 2
HEAD_CHANNELS = LAYERS * 9  # per layer: depth 1, scales 3, quaternion 4, opacity 1

# Every predictor built in this process, newest last (lets tests count builds and loads).
CREATED: list[RGBGaussianPredictor] = []


@dataclass
class PredictorParams:
    """Hyper-parameters; the defaults are "the released model"."""

    seed: int = 0


class RGBGaussianPredictor(nn.Module):
    """Trunk (``monodepth_model``, ``feature_model``) + ``prediction_head``, as upstream names them."""

    def __init__(self, params: PredictorParams) -> None:
        super().__init__()
        self.monodepth_model = nn.Conv2d(3, 4, 1)
        self.feature_model = nn.Conv2d(3, 8, 1)
        self.prediction_head = nn.Conv2d(12, HEAD_CHANNELS, 1)
        gen = torch.Generator().manual_seed(params.seed)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
        self.batch_sizes: list[int] = []
        self.state_dict_loads = 0

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        self.state_dict_loads += 1
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def forward(self, image: torch.Tensor, disparity_factor: torch.Tensor, depth: object = None) -> Gaussians3D:
        _check_inputs(image, disparity_factor)
        b = image.shape[0]
        self.batch_sizes.append(b)
        if len(self.batch_sizes) == 1 and os.environ.get("SHARP_STANDIN_HOLD_FIRST_PASS"):
            _hold(os.environ["SHARP_STANDIN_HOLD_FIRST_PASS"])
        limit = os.environ.get("SHARP_STANDIN_MAX_BATCH")
        if limit is not None and b > int(limit):
            raise torch.OutOfMemoryError(f"CUDA out of memory. Tried to allocate {b} GiB (stand-in)")
        if os.environ.get("SHARP_STANDIN_FATAL") == "1":
            raise torch.AcceleratorError("CUDA error: an illegal memory access was encountered (stand-in)")
        if bool((image.amax(dim=(1, 2, 3)) == 0).any()):
            raise RuntimeError("stand-in cannot predict an all-black image")
        pooled = F.avg_pool2d(image, 2)
        trunk = torch.cat([self.monodepth_model(pooled), self.feature_model(pooled)], dim=1)
        head = self.prediction_head(trunk)
        return _gaussians(pooled, head, disparity_factor)


def _hold(spec: str, timeout_s: float = 120.0) -> None:
    """``DIR:N``: wait until DIR holds N files (not hidden), like a first pass slow enough for the
    caller to have queued everything it will pass next; after ``timeout_s`` go on regardless."""
    folder, _, count = spec.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if sum(1 for e in os.scandir(folder) if e.is_file() and not e.name.startswith(".")) >= int(count):
                return
        except FileNotFoundError:
            pass
        time.sleep(0.02)


def _check_inputs(image: torch.Tensor, disparity_factor: torch.Tensor) -> None:
    size = INTERNAL_SIZE
    if image.ndim != 4 or tuple(image.shape[1:]) != (3, size, size):
        raise ValueError(f"image must be [B, 3, {size}, {size}], got {tuple(image.shape)}")
    if image.dtype != torch.float32:
        raise ValueError(f"image must be float32, got {image.dtype}")
    if float(image.min()) < 0 or float(image.max()) > 1:
        raise ValueError("image values must be in [0, 1]")
    if tuple(disparity_factor.shape) != (image.shape[0],) or not disparity_factor.is_floating_point():
        raise ValueError(f"disparity_factor must be float [B], got {tuple(disparity_factor.shape)}")


def _gaussians(pooled: torch.Tensor, head: torch.Tensor, disparity_factor: torch.Tensor) -> Gaussians3D:
    b, _, h, w = pooled.shape
    dev = pooled.device
    ys = (torch.arange(h, dtype=torch.float32, device=dev) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, dtype=torch.float32, device=dev) + 0.5) / w * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    layers = head.reshape(b, LAYERS, 9, h, w)
    means, scales, quats, opac = [], [], [], []
    for layer in range(LAYERS):
        p = layers[:, layer]
        # Nearer for larger disparity factors (longer focal lengths relative to the width).
        z = (1.0 + 0.5 * layer + F.softplus(p[:, 0])) / (4.0 * disparity_factor[:, None, None])
        means.append(torch.stack([gx * z, gy * z, z], dim=-1))
        scales.append((2.0 / INTERNAL_SIZE) * z[..., None] * (0.2 + torch.sigmoid(p[:, 1:4]).permute(0, 2, 3, 1)))
        q = p[:, 4:8].permute(0, 2, 3, 1) + torch.tensor([1.0, 0.0, 0.0, 0.0], device=dev)
        quats.append(q / q.norm(dim=-1, keepdim=True))
        opac.append(torch.sigmoid(p[:, 8]))
    colors = pooled.permute(0, 2, 3, 1).clamp(0, 1)

    def flat(parts: list[torch.Tensor], k: int) -> torch.Tensor:
        return torch.stack(parts, dim=1).reshape(b, -1, k) if k else torch.stack(parts, dim=1).reshape(b, -1)

    return Gaussians3D(
        mean_vectors=flat(means, 3),
        singular_values=flat(scales, 3),
        quaternions=flat(quats, 4),
        colors=torch.stack([colors] * LAYERS, dim=1).reshape(b, -1, 3),
        opacities=flat(opac, 0),
    )


def create_predictor(params: PredictorParams) -> RGBGaussianPredictor:
    """Build the network with its initial weights; downloads nothing (as upstream)."""
    model = RGBGaussianPredictor(params)
    CREATED.append(model)
    return model
