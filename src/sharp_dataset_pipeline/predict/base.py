"""The Predictor protocol: a decoded batch of images (+ focal lengths) → raw splats.

A predictor returns, per input, either a ``RawSplat`` (whose ``to_gaussians`` is pure and runs
in the post-process stage, off the predictor's thread) or a ``Failure``. Heavy post-processing
belongs in ``to_gaussians`` so that the GPU can start the next batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..records import Failure, FetchedImage
from ..splat.gaussians import Gaussians


class RawSplat(Protocol):
    """A prediction not yet turned into SHARP's PLY attributes."""

    def to_gaussians(self) -> Gaussians: ...


class Predictor(Protocol):
    name: str
    model_version: str
    batch_size: int

    def predict(self, images: Sequence[FetchedImage]) -> list[RawSplat | Failure]:
        """One result per input, in input order."""
        ...

    def close(self) -> None: ...


class ReadyGaussians:
    """A RawSplat that is already in PLY layout (cheap predictors, CLI outputs read back)."""

    def __init__(self, gaussians: Gaussians) -> None:
        self._gaussians = gaussians

    def to_gaussians(self) -> Gaussians:
        return self._gaussians
