"""ml-sharp in process: one resident model, batched forward passes, post-processing left to workers.

The model is built and its checkpoint loaded once per predictor (``load``, also called by the
first ``predict``). Each ``predict`` call stacks its images into ONE forward pass at the
network's internal resolution: images go to the device as uint8 and are resized there (bilinear,
``align_corners=True``, aspect ratio ignored, as ml-sharp's own CLI does), so no full-resolution
float image crosses the bus. Each image gets its own disparity factor ``f_px / width``.

Results are RawSplats. On CUDA the unprojection runs on the GPU before returning (one (N, 14)
block comes back); elsewhere the NDC arrays come back and ``to_gaussians`` unprojects them with
numpy in the post-process worker, so the device can start the next batch at once.

Failures: CUDA out-of-memory halves the batch and retries (and later batches stay at the size
that fitted); an image that fails alone becomes a ``Failure``; an accelerator fault raises
``FatalDeviceError`` so the run stops cleanly.

Internal resolution: ml-sharp hard-codes 1536×1536. A package that defines
``sharp.models.INTERNAL_SIZE`` (test stand-ins do, to run at a tiny size) overrides it.

Precision: ``fp32`` is upstream's behaviour. ``bf16``/``fp16`` run only the network trunk
(``monodepth_model`` and ``feature_model``, as ml-sharp names them) under ``torch.autocast`` and
hand its outputs back to the heads in float32; outputs change slightly.

Random weights (``random_weights=True``): the same network with its untrained initial weights and
no checkpoint, for timing only (``benchmarks/bench_gpu.py --random-weights``). Its
``model_version`` is ``RANDOM_WEIGHTS_VERSION`` so every output says so; ``sharp-dataset run``
refuses the setting (``SHARP_RANDOM_WEIGHTS``), only the benchmark's timing path accepts it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, FatalDeviceError, PermanentError
from ..records import Failure, FetchedImage
from ..splat.unproject import NdcSplat, unproject_torch
from .base import RawSplat, ReadyGaussians

logger = logging.getLogger(__name__)

DEFAULT_MODEL_URL = "https://ml-site.cdn-apple.com/models/sharp/sharp_2572gikvuh.pt"
CHECKPOINT_SIZE_TEXT = "about 2.8 GB"
UPSTREAM_INTERNAL_SIZE = 1536
PRECISIONS = ("fp32", "bf16", "fp16")
TRUNK_MODULES = ("monodepth_model", "feature_model")
RANDOM_WEIGHTS_VERSION = "random-weights-untrained"
# Older torch raises a plain RuntimeError for device faults; these say the device is gone.
_FATAL_MARKERS = ("CUDA error", "illegal memory access", "device-side assert", "CUBLAS_STATUS",
                  "cuDNN error", "unspecified launch failure", "ECC error")


def sharp_available() -> bool:
    """True when ml-sharp (``sharp.models``) and torch can be imported here. Imports neither model."""
    try:
        return (importlib.util.find_spec("torch") is not None
                and importlib.util.find_spec("sharp") is not None
                and importlib.util.find_spec("sharp.models") is not None)
    except (ImportError, ValueError):
        # find_spec("sharp.models") imports ``sharp``; an unrelated or broken ``sharp`` lands here.
        return False


def describe_install_help() -> str:
    """How to get a working SHARP predictor, for error messages."""
    return (
        "SHARP (Apple ml-sharp) is not importable here. Either install it into this environment:\n"
        '    pip install "sharp @ git+https://github.com/apple/ml-sharp"\n'
        "(it brings torch; its model weights, about 2.8 GB, download on first use or come from\n"
        "SHARP_CHECKPOINT_PATH), or keep ml-sharp in its own conda environment and use\n"
        "    --predictor sharp-cli  (with CONDA_ENV_NAME and ML_SHARP_DIR),\n"
        "or try the pipeline without SHARP:  --predictor planar  (a CPU stand-in, not SHARP)."
    )


@dataclasses.dataclass(frozen=True)
class SharpOptions:
    """Which SHARP weights to run, where, and how many images at once (built once from the settings)."""

    checkpoint_path: str | None = None  # None: download ``checkpoint_url`` into the cache
    device: str = "default"
    batch_size: int = 1
    precision: str = "fp32"
    checkpoint_url: str = DEFAULT_MODEL_URL
    unproject_on_device: bool | None = None
    random_weights: bool = False


class SharpPredictor:
    """The ``sharp`` predictor (see the module docstring)."""

    name = "sharp"

    def __init__(self, options: SharpOptions, *, log: logging.Logger | None = None) -> None:
        o = options
        checkpoint_path, checkpoint_url, random_weights = o.checkpoint_path, o.checkpoint_url, o.random_weights
        if random_weights and checkpoint_path:
            raise ConfigError("random weights and SHARP_CHECKPOINT_PATH exclude each other; choose one")
        if o.precision not in PRECISIONS:
            raise ConfigError(f"SHARP_PRECISION must be one of {', '.join(PRECISIONS)}, got {o.precision!r}")
        if o.batch_size < 1:
            raise ConfigError(f"SHARP_BATCH_SIZE must be at least 1, got {o.batch_size}")
        batch_size = o.batch_size
        self.batch_size = batch_size
        self._checkpoint_path = checkpoint_path or None
        self._device_name = o.device or "default"
        self._precision = o.precision
        self._log = log or logger
        self._url = checkpoint_url
        self._unproject_on_device = o.unproject_on_device  # None: on CUDA only (MPS lacks float64)
        self._random_weights = random_weights
        source = self._checkpoint_path or checkpoint_url
        self.model_version = RANDOM_WEIGHTS_VERSION if random_weights else Path(source.rsplit("/", 1)[-1]).stem
        self._fit_batch = batch_size  # shrinks after an out-of-memory error
        self._torch: Any = None
        self._model: Any = None
        self._device: Any = None
        self._size = UPSTREAM_INTERNAL_SIZE

    # -- set-up --------------------------------------------------------------------------------

    def load(self) -> None:
        """Build the network and load the checkpoint, once. Raises ``ConfigError`` if impossible."""
        if self._model is not None:
            return
        try:
            import torch
            from sharp import models
        except ImportError as exc:
            raise ConfigError(describe_install_help()) from exc
        self._torch = torch
        self._device = _pick_device(torch, self._device_name)
        if self._device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shape: let cuDNN pick its fastest kernels
        self._size = int(getattr(models, "INTERNAL_SIZE", UPSTREAM_INTERNAL_SIZE))
        self._log.info("building the SHARP network (model %s) on %s", self.model_version, self._device)
        model = models.create_predictor(models.PredictorParams())
        if self._random_weights:
            self._log.warning("SHARP runs with RANDOM (untrained) weights: for timing only, not SHARP's output")
        else:
            state = self._state_dict(torch)
            try:
                model.load_state_dict(state)
            except RuntimeError as exc:
                raise ConfigError(f"the checkpoint does not fit this ml-sharp version: {exc}") from exc
        model.eval().to(self._device)
        if self._precision != "fp32":
            _autocast_trunk(torch, model, self._device.type, self._precision, self._log)
        self._model = model

    def _state_dict(self, torch: Any) -> Any:
        if self._checkpoint_path:
            path = Path(self._checkpoint_path).expanduser()
            if not path.is_file():
                raise ConfigError(f"SHARP_CHECKPOINT_PATH does not name a file: {path}")
            self._log.info("loading the SHARP checkpoint from %s", path)
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except (RuntimeError, EOFError, pickle.UnpicklingError) as exc:
                raise ConfigError(f"cannot read the SHARP checkpoint {path}: {exc}") from exc
        cache = Path(torch.hub.get_dir()) / "checkpoints" / self._url.rsplit("/", 1)[-1]
        if cache.is_file():
            self._log.info("loading the SHARP checkpoint from the torch hub cache: %s", cache)
        else:
            self._log.warning(
                "downloading the SHARP checkpoint (%s) from %s into %s; later runs reuse it "
                "(set SHARP_CHECKPOINT_PATH to use a local copy)", CHECKPOINT_SIZE_TEXT,
                self._url, cache.parent)
        try:
            return torch.hub.load_state_dict_from_url(
                self._url, map_location="cpu", progress=False, weights_only=True)
        except OSError as exc:
            raise ConfigError(
                f"could not download the SHARP checkpoint ({exc}); download {self._url} "
                "yourself and set SHARP_CHECKPOINT_PATH") from exc

    def close(self) -> None:
        """Drop the model and release cached device memory."""
        self._model = None
        if self._torch is not None and self._device is not None and self._device.type == "cuda":
            self._torch.cuda.empty_cache()

    # -- prediction ----------------------------------------------------------------------------

    def predict(self, images: Sequence[FetchedImage]) -> list[RawSplat | Failure]:
        """One result per input, in input order (see the module docstring)."""
        self.load()
        results: list[RawSplat | Failure | None] = [None] * len(images)
        todo: list[tuple[int, FetchedImage]] = []
        for i, img in enumerate(images):
            problem = _input_problem(img)
            if problem:
                results[i] = _failure(img, "bad_input", problem, transient=False)
            else:
                todo.append((i, img))
        start = 0
        while start < len(todo):
            # Re-read the size each time: an out-of-memory error in this call may have shrunk it.
            chunk = todo[start:start + self._fit_batch]
            self._run(chunk, results)
            start += len(chunk)
        return [r if r is not None else _failure(images[i], "predict_error", "no result", True)
                for i, r in enumerate(results)]

    def _run(self, chunk: list[tuple[int, FetchedImage]], results: list[Any]) -> None:
        torch = self._torch
        try:
            outputs = self._forward(chunk)
        except torch.OutOfMemoryError as exc:
            self._release_cache()
            if len(chunk) == 1:
                i, img = chunk[0]
                results[i] = _failure(img, "device_oom", f"out of device memory for one image: {exc}", True)
                return
            fit = max(1, min(self._fit_batch, len(chunk) // 2))
            if fit < self._fit_batch:
                self._log.warning("out of device memory with %d images per pass; using %d from now on",
                                  len(chunk), fit)
                self._fit_batch = fit
            for start in range(0, len(chunk), fit):
                self._run(chunk[start:start + fit], results)
            return
        except RuntimeError as exc:
            if _is_fatal(torch, exc):
                raise FatalDeviceError(f"the prediction device failed: {exc}") from exc
            self._isolate(chunk, results, exc)
            return
        except ValueError as exc:
            self._isolate(chunk, results, exc)
            return
        for (i, _), out in zip(chunk, outputs, strict=True):
            results[i] = out

    def _isolate(self, chunk: list[tuple[int, FetchedImage]], results: list[Any], exc: Exception) -> None:
        """A batch failed for a reason tied to its data: retry one by one so only the culprit fails."""
        if len(chunk) == 1:
            i, img = chunk[0]
            self._log.warning("SHARP failed on item %s: %s", img.item.id, exc)
            results[i] = _failure(img, "predict_error", f"{type(exc).__name__}: {exc}", False)
            return
        for one in chunk:
            self._run([one], results)

    def _forward(self, chunk: list[tuple[int, FetchedImage]]) -> list[RawSplat | Failure]:
        torch = self._torch
        with torch.inference_mode():
            batch = torch.stack([self._to_input(img) for _, img in chunk])
            factors = torch.tensor([img.focal_px / img.width for _, img in chunk],
                                   dtype=torch.float32, device=self._device)
            out = self._model(batch, factors)
            return [self._split(out, b, img) for b, (_, img) in enumerate(chunk)]

    def _to_input(self, img: FetchedImage) -> Any:
        """uint8 H×W×3 → float [3, S, S] in 0..1, resized on the device."""
        torch = self._torch
        rgb = torch.from_numpy(np.ascontiguousarray(img.rgb)).to(self._device)
        x = rgb.permute(2, 0, 1).unsqueeze(0).to(torch.float32).div_(255.0)
        x = torch.nn.functional.interpolate(x, size=(self._size, self._size), mode="bilinear",
                                            align_corners=True)
        return x[0].clamp_(0.0, 1.0)

    def _split(self, out: Any, b: int, img: FetchedImage) -> RawSplat | Failure:
        fields = (out.mean_vectors[b], out.singular_values[b], out.quaternions[b], out.colors[b],
                  out.opacities[b])
        on_device = self._unproject_on_device
        if on_device if on_device is not None else self._device.type == "cuda":
            try:
                g = unproject_torch(*fields, focal_px=img.focal_px, width=img.width, height=img.height)
            except PermanentError as exc:  # e.g. NaN in this image's output: it fails alone
                return _failure(img, exc.reason, str(exc), transient=False)
            return ReadyGaussians(g)
        arrays = [t.detach().to("cpu", self._torch.float32).numpy() for t in fields]
        return NdcSplat(*arrays, focal_px=float(img.focal_px), width=int(img.width), height=int(img.height))

    def _release_cache(self) -> None:
        if self._device.type == "cuda":
            self._torch.cuda.empty_cache()


def _pick_device(torch: Any, name: str) -> Any:
    if name in ("default", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"SHARP_DEVICE {name!r} is not a torch device: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"SHARP_DEVICE is {name!r} but torch sees no CUDA device")
    return device


def _autocast_trunk(torch: Any, model: Any, device_type: str, precision: str, log: logging.Logger) -> None:
    """Run the trunk under autocast and give its outputs back in float32; the state dict is untouched."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    try:
        with torch.autocast(device_type, dtype=dtype):
            pass
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"SHARP_PRECISION={precision} is not supported on {device_type}: {exc}") from exc
    targets = [getattr(model, n) for n in TRUNK_MODULES if isinstance(getattr(model, n, None), torch.nn.Module)]
    if not targets:
        log.warning("no %s submodules found; the whole network runs under %s autocast",
                    "/".join(TRUNK_MODULES), precision)
        targets = [model]
    for module in targets:
        module.forward = _autocast_forward(torch, module.forward, device_type, dtype)
    log.info("SHARP trunk runs in %s (outputs differ slightly from fp32)", precision)


def _autocast_forward(torch: Any, forward: Any, device_type: str, dtype: Any) -> Any:
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type, dtype=dtype):
            out = forward(*args, **kwargs)
        return _to_float32(torch, out)

    return run


def _to_float32(torch: Any, obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_to_float32(torch, x) for x in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_float32(torch, x) for x in obj)
    if isinstance(obj, dict):
        return {k: _to_float32(torch, v) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: _to_float32(torch, getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
        return dataclasses.replace(obj, **changes)
    return obj


def _is_fatal(torch: Any, exc: RuntimeError) -> bool:
    accel = getattr(torch, "AcceleratorError", None)
    if accel is not None and isinstance(exc, accel):
        return True
    text = str(exc)
    return any(marker in text for marker in _FATAL_MARKERS)


def _input_problem(img: FetchedImage) -> str:
    rgb = img.rgb
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        shape = getattr(rgb, "shape", None)
        return f"decoded image must be uint8 H×W×3, got {shape} {getattr(rgb, 'dtype', None)}"
    if not (img.focal_px > 0 and img.width > 0 and img.height > 0):
        return f"need a positive focal length and size, got f={img.focal_px} {img.width}x{img.height}"
    return ""


def _failure(img: FetchedImage, reason: str, detail: str, transient: bool) -> Failure:
    return Failure(item_id=img.item.id, unit=img.item.unit, stage="predict", reason=reason,
                   detail=detail[:500], transient=transient)
