"""The ``sharp predict`` command on a folder per batch, for ml-sharp kept in its own environment.

Per ``predict`` call: the batch's images are staged in a fresh folder under unique stems
(``000-<id>``), one ``sharp predict -i <folder> -o <out>`` runs (through ``conda run -n ENV``
when a conda environment is configured and ``conda`` exists; cwd ``ML_SHARP_DIR``), and each
``<stem>.ply`` is read back into ``ReadyGaussians``. An image without an output becomes a
``Failure`` whose detail is the readable tail of the command's output (secrets masked).

Staging: the original file is hard-linked (or copied) when ml-sharp reads it as it is (8-bit
RGB or grey JPEG/PNG/WebP with a rotation ml-sharp applies), so ml-sharp reads the same pixels
and EXIF focal length it would read by itself; anything else (CMYK, palette, 16-bit, alpha,
mirrored orientations) is written as an 8-bit RGB PNG of the decoded image, which ml-sharp
then treats with its default 30 mm focal length. The command has no focal-length flag: the
focal length actually used is the one in the PLY (``Gaussians.focal_px``).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..records import Failure, FetchedImage
from ..redact import env_secrets, is_secret_env_name
from ..redact import redact as redact_text
from ..splat.ply import InvalidSplat, read_ply
from .base import RawSplat, ReadyGaussians

logger = logging.getLogger(__name__)

DEFAULT_MODEL_VERSION = "sharp_2572gikvuh"  # the checkpoint `sharp predict` downloads by default
_DIRECT_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
_APPLIED_ORIENTATIONS = (1, 3, 6, 8)  # ml-sharp rotates for 3/6/8 and ignores mirrored ones
_TAIL_CHARS = 800
_AFTER_KILL_S = 30.0


def sharp_cli_available(conda_env: str | None = None) -> bool:
    """True when a ``sharp`` command is on PATH, or ``conda`` is and a conda environment is named."""
    return shutil.which("sharp") is not None or bool(conda_env and shutil.which("conda"))


class SharpCliPredictor:
    """The ``sharp-cli`` predictor (see the module docstring)."""

    name = "sharp-cli"

    def __init__(self, *, conda_env: str | None, ml_sharp_dir: str | None, device: str, verbose: bool,
                 input_dir: str | None, work_dir: Path, timeout_s: float, batch_size: int,
                 checkpoint_path: str | None = None, log: logging.Logger | None = None) -> None:
        if batch_size < 1:
            raise ConfigError(f"SHARP_BATCH_SIZE must be at least 1, got {batch_size}")
        if timeout_s <= 0:
            raise ConfigError(f"the sharp predict timeout must be positive, got {timeout_s}")
        if checkpoint_path and not Path(checkpoint_path).is_file():
            raise ConfigError(f"SHARP_CHECKPOINT_PATH: {checkpoint_path} is not a file (a local ml-sharp .pt "
                              "checkpoint; leave it unset to use the one sharp predict downloads)")
        self.batch_size = batch_size
        self.model_version = Path(checkpoint_path).stem if checkpoint_path else DEFAULT_MODEL_VERSION
        self._log = log or logger
        self._prefix = self._command_prefix(conda_env)
        self._cwd = _existing_dir(ml_sharp_dir, "ML_SHARP_DIR")
        self._device = device or "default"
        self._verbose = verbose
        # Absolute: the command runs in ML_SHARP_DIR, where a relative path would name another file.
        self._checkpoint = os.path.abspath(checkpoint_path) if checkpoint_path else None
        self._work_dir = Path(work_dir)
        self._input_root = Path(input_dir) if input_dir else self._work_dir
        self._timeout_s = timeout_s

    def _command_prefix(self, conda_env: str | None) -> list[str]:
        conda = shutil.which("conda") if conda_env else None
        if conda_env and conda:
            return [conda, "run", "-n", conda_env, "sharp"]
        if conda_env:
            self._log.warning("CONDA_ENV_NAME is %r but no conda command is on PATH; running sharp directly",
                              conda_env)
        sharp = shutil.which("sharp")
        if sharp is None:
            raise ConfigError(
                "the sharp command is not on PATH and no conda environment is configured: install "
                "ml-sharp (https://github.com/apple/ml-sharp), or set CONDA_ENV_NAME to the conda "
                "environment that has it, or use --predictor planar")
        return [sharp]

    def command(self, in_dir: Path, out_dir: Path) -> list[str]:
        """The argument list one batch runs."""
        cmd = [*self._prefix, "predict", "-i", str(in_dir), "-o", str(out_dir), "--device", self._device]
        if self._verbose:
            cmd.append("-v")
        if self._checkpoint:  # ml-sharp's -c/--checkpoint-path; without it the default is downloaded
            cmd += ["-c", self._checkpoint]
        return cmd

    def close(self) -> None:
        """Nothing stays resident between batches."""

    def predict(self, images: Sequence[FetchedImage]) -> list[RawSplat | Failure]:
        """One result per input, in input order: one ``sharp predict`` per call."""
        if not images:
            return []
        name = f"sharp-batch-{uuid.uuid4().hex[:12]}"
        in_dir = self._input_root / name / "in"
        out_dir = self._work_dir / name / "out"
        try:
            in_dir.mkdir(parents=True)
            out_dir.mkdir(parents=True)
            stems = [f"{i:03d}-{_safe_stem(img.item.id)}" for i, img in enumerate(images)]
            for stem, img in zip(stems, images, strict=True):
                _stage(img, in_dir, stem)
            outcome = self._run(self.command(in_dir, out_dir), len(images))
            return [self._collect(img, out_dir / f"{stem}.ply", outcome) for stem, img in zip(stems, images,
                                                                                              strict=True)]
        finally:
            for folder in {self._input_root / name, self._work_dir / name}:
                _remove(folder)

    def _run(self, cmd: list[str], count: int) -> _Outcome:
        started = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=self._cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=_child_env(), start_new_session=(os.name == "posix"))
        timed_out = False
        try:
            out, err = proc.communicate(timeout=self._timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_tree(proc)
            try:
                out, err = proc.communicate(timeout=_AFTER_KILL_S)
            except subprocess.TimeoutExpired:
                # Something outside the killed group still holds the pipes; do not wait on it.
                self._log.warning("sharp predict was killed but its output pipes stay open")
                out, err = b"", b""
        took = time.monotonic() - started
        rc = proc.returncode
        self._log.info("sharp predict: %d images, exit %s after %.1f s%s", count, rc, took,
                       " (timed out)" if timed_out else "")
        return _Outcome(rc=rc, timed_out=timed_out, tail=_tail(err, out), took_s=took)

    def _collect(self, img: FetchedImage, ply: Path, outcome: _Outcome) -> RawSplat | Failure:
        if ply.is_file():
            try:
                return ReadyGaussians(read_ply(ply))
            except InvalidSplat as exc:
                return _failure(img, "sharp_cli_bad_output", f"sharp wrote an invalid PLY: {exc}", True)
        if outcome.timed_out:
            return _failure(img, "sharp_cli_timeout",
                            f"sharp predict ran past {self._timeout_s:.0f} s; output: {outcome.tail}", True)
        if outcome.rc != 0:
            return _failure(img, "sharp_cli_failed", f"sharp predict exited {outcome.rc}: {outcome.tail}", True)
        return _failure(img, "sharp_cli_no_output", f"sharp predict wrote no PLY for this image: {outcome.tail}",
                        False)


@dataclass(frozen=True)
class _Outcome:
    rc: int
    timed_out: bool
    tail: str
    took_s: float


def _existing_dir(path: str | None, what: str) -> Path | None:
    if not path:
        return None
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ConfigError(f"{what} is not a folder: {p}")
    return p


def _safe_stem(item_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", item_id)[:80] or "image"


def _stage(img: FetchedImage, folder: Path, stem: str) -> Path:
    """Put the image where ``sharp predict`` will find it under ``stem``; return its path."""
    from PIL import Image  # Pillow is a core dependency; imported here to keep module import light

    ext = _direct_extension(img)
    if ext:
        dest = folder / f"{stem}.{ext}"
        try:
            os.link(img.original_path, dest)
        except OSError:
            shutil.copyfile(img.original_path, dest)
        return dest
    dest = folder / f"{stem}.png"
    Image.fromarray(np.ascontiguousarray(img.rgb)).save(dest, format="PNG", compress_level=1)
    return dest


def _direct_extension(img: FetchedImage) -> str:
    """The extension to link the original under, or '' when ml-sharp would misread it."""
    from PIL import Image, UnidentifiedImageError

    path = Path(img.original_path)
    if not path.is_file():
        return ""
    try:
        with Image.open(path) as im:
            fmt, mode = im.format, im.mode
            orientation = im.getexif().get(0x0112, 1)
    except (OSError, UnidentifiedImageError, SyntaxError):
        return ""
    if fmt not in _DIRECT_FORMATS or mode not in ("RGB", "L") or orientation not in _APPLIED_ORIENTATIONS:
        return ""
    return _DIRECT_FORMATS[fmt]


def _child_env() -> dict[str, str]:
    """The environment minus anything secret: ``sharp`` needs no tokens or keys."""
    return {k: v for k, v in os.environ.items() if not is_secret_env_name(k)}


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    # conda run starts sharp as a grandchild: kill the whole session we created for the command.
    if os.name == "posix":
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
    else:
        proc.kill()


def _tail(err: bytes, out: bytes) -> str:
    """The last lines of stderr (else stdout), decoded, with secrets masked."""
    text = (err or b"").decode("utf-8", "replace").strip() or (out or b"").decode("utf-8", "replace").strip()
    if not text:
        return "(no output)"
    return redact(text[-_TAIL_CHARS:])


def redact(text: str) -> str:
    """``text`` through the project's redactor, with the values of secret-named environment variables."""
    return redact_text(text, env_secrets(os.environ))


def _remove(folder: Path) -> None:
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        return
    except OSError as exc:
        logger.warning("could not remove %s after a sharp batch: %s", folder, exc)


def _failure(img: FetchedImage, reason: str, detail: str, transient: bool) -> Failure:
    return Failure(item_id=img.item.id, unit=img.item.unit, stage="predict", reason=reason,
                   detail=detail[:1000], transient=transient)
