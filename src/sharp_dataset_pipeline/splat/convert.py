"""Run PlayCanvas ``splat-transform`` (npm, pinned in the repo's ``package.json``) as a subprocess.

Why a subprocess: splat-transform is the reference writer of ``.sog``, ``.compressed.ply`` and the
self-contained ``.html`` viewer (``.spz`` is written in process by ``spz.py``; the tests still use
splat-transform as an independent SPZ reader and writer). Short flags changed meaning between its
versions (``-F`` was a visibility filter in 1.x and is a floater filter in 3.x), so this module only
ever passes long options, and the version is pinned exactly.

Locating the tool (``locate_splat_transform``): an explicit path (``SPLAT_TRANSFORM_BIN``) wins; the
bare default name ``splat-transform`` means "this project's ``node_modules/.bin`` (next to the
current directory or the repository root), then ``PATH``". splat-transform 3.x declares Node >= 22;
``package.json`` also pins the npm package ``node`` (a Node 22 binary), and when that binary sits
next to the tool in ``node_modules/.bin`` the tool runs under it rather than under whatever ``node``
is first on ``PATH``.

Failures are mapped onto the project's errors: a missing tool is a ``ConfigError`` (no item can
succeed until it is installed), a timeout or a kill by signal (e.g. the kernel's out-of-memory
killer) a ``TransientError``, a non-zero exit a ``PermanentError`` whose message is the tool's own
error line.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, PermanentError, TransientError

logger = logging.getLogger(__name__)

TOOL_NAME = "splat-transform"
PINNED_VERSION = "3.7.0"
DEFAULT_TIMEOUT_S = 600.0
_REPO_ROOT = Path(__file__).resolve().parents[3]  # src/sharp_dataset_pipeline/splat/convert.py
_MAX_DETAIL = 400


@dataclass(frozen=True)
class SplatTransform:
    """How to start splat-transform: ``argv`` is the command prefix (interpreter and script, or the binary)."""

    argv: tuple[str, ...]
    origin: str  # "override", "node_modules" or "PATH", for log lines and error messages

    def describe(self) -> str:
        return f"{' '.join(self.argv)} (from {self.origin})"


def _tool_error(message: str, reason: str, *, transient: bool) -> TransientError | PermanentError:
    if transient:
        err = TransientError(message)
        err.reason = reason  # type: ignore[attr-defined]  # TransientError carries no reason field yet
        return err
    return PermanentError(message, reason=reason)


def _from_node_modules(bin_dir: Path) -> SplatTransform | None:
    tool = bin_dir / TOOL_NAME
    if not tool.exists():
        return None
    node = bin_dir / "node"
    if node.exists() and os.access(node, os.X_OK):
        # The .bin entry is a link to the package's cli.mjs; run it with the pinned Node 22 next to it
        # (its shebang would pick the first `node` on PATH, which may be older).
        return SplatTransform((str(node), str(tool.resolve())), "node_modules")
    return SplatTransform((str(tool),), "node_modules")


def locate_splat_transform(override: str = "", *, search_roots: Sequence[Path] | None = None) -> SplatTransform:
    """Find splat-transform; raise ``ConfigError`` with install instructions when it is absent.

    ``override``: a path to the executable (used as is), another bare command name (looked up on
    ``PATH``), or ``""`` / ``"splat-transform"`` for the automatic search: ``node_modules/.bin`` under
    each of ``search_roots`` (default: the current directory, then the repository root), then ``PATH``.
    """
    override = override.strip()
    if override and override != TOOL_NAME:
        if os.sep in override or (os.altsep and os.altsep in override):
            path = Path(override).expanduser()
            if not path.is_file():
                raise ConfigError(f"SPLAT_TRANSFORM_BIN points to {path}, which is not a file")
            return SplatTransform((str(path),), "override")
        found = shutil.which(override)
        if found is None:
            raise ConfigError(f"SPLAT_TRANSFORM_BIN={override!r} is not on PATH")
        return SplatTransform((found,), "override")
    roots = list(search_roots) if search_roots is not None else [Path.cwd(), _REPO_ROOT]
    for root in roots:
        tool = _from_node_modules(Path(root) / "node_modules" / ".bin")
        if tool is not None:
            return tool
    found = shutil.which(TOOL_NAME)
    if found is not None:
        return SplatTransform((found,), "PATH")
    raise ConfigError(
        f"{TOOL_NAME} not found (looked in node_modules/.bin under {', '.join(map(str, roots))} and on PATH). "
        f"Install it with `npm ci` in the repository root (it pins {TOOL_NAME} {PINNED_VERSION}), "
        "or set SPLAT_TRANSFORM_BIN to its path."
    )


def _error_line(stderr: str) -> str:
    """The tool's own error message: its ``Error:`` line, else the last non-stack line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "Error:" in line:
            return line.lstrip("✗ ").strip()[:_MAX_DETAIL]
    useful = [line for line in lines if not line.startswith("at ")]
    return (useful[-1] if useful else "no error output")[:_MAX_DETAIL]


def _kill_group(proc: subprocess.Popen[str]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def run_splat_transform(
    tool: SplatTransform, args: Sequence[str], *, timeout_s: float = DEFAULT_TIMEOUT_S, what: str = ""
) -> subprocess.CompletedProcess[str]:
    """Run ``tool`` with ``args`` (long options only); return the finished process (stdout, stderr).

    The tool runs in its own process group so that a timeout kills it together with its worker
    threads' helpers. ``what`` names the job in error messages (e.g. ``"item abc: .spz"``).
    """
    argv = [*tool.argv, *args]
    label = what or " ".join(args[-2:])
    logger.debug("running %s", " ".join(argv))
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", errors="replace", start_new_session=True,
        )
    except OSError as exc:
        raise ConfigError(f"cannot start {tool.describe()}: {exc}") from exc
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        _kill_group(proc)
        proc.communicate()
        raise _tool_error(
            f"{TOOL_NAME} timed out after {timeout_s:g} s ({label})", "splat_transform_timeout", transient=True
        ) from exc
    except BaseException:
        _kill_group(proc)
        proc.communicate()
        raise
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else "?"
        raise _tool_error(
            f"{TOOL_NAME} was killed by signal {name} ({label}); out of memory?",
            "splat_transform_killed", transient=True,
        )
    if proc.returncode != 0:
        raise _tool_error(
            f"{TOOL_NAME} failed with exit code {proc.returncode} ({label}): {_error_line(stderr)}",
            "splat_transform_failed", transient=False,
        )
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def _arg_path(path: Path) -> str:
    # Absolute paths never start with '-', so no file name can be taken for an option.
    return str(Path(path).resolve())


def convert(
    tool: SplatTransform,
    src: Path,
    dst: Path,
    *,
    options: Sequence[str] = (),
    timeout_s: float = DEFAULT_TIMEOUT_S,
    what: str = "",
) -> None:
    """Convert ``src`` into ``dst`` (format from ``dst``'s extension), atomically.

    The tool writes to a hidden temporary name with the same extension in ``dst``'s folder, which
    is renamed over ``dst`` only after a clean exit, so ``dst`` is never a partial file.
    ``options`` go after the output name (e.g. ``("--spz-version", "3")``) and must be long options.
    """
    for opt in options:
        if opt.startswith("-") and not opt.startswith("--"):
            raise ValueError(f"only long options are passed to {TOOL_NAME}; got {opt!r}")
    dst = Path(dst)
    tmp = dst.with_name(f".tmp-{secrets.token_hex(4)}-{dst.name}")
    try:
        run_splat_transform(
            tool,
            ["--quiet", "--no-tty", "--overwrite", _arg_path(src), _arg_path(tmp), *options],
            timeout_s=timeout_s, what=what or f"{Path(src).name} -> {dst.name}",
        )
        if not tmp.is_file():
            raise _tool_error(f"{TOOL_NAME} exited cleanly but wrote no {dst.name}",
                              "splat_transform_failed", transient=False)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _read_json(tool: SplatTransform, path: Path, flag: str, timeout_s: float) -> dict[str, Any]:
    out = run_splat_transform(
        tool, ["--quiet", "--no-tty", _arg_path(path), flag, "json", "null"],
        timeout_s=timeout_s, what=f"{flag} {Path(path).name}",
    ).stdout
    try:
        data = json.loads(out)
    except ValueError as exc:
        raise _tool_error(f"{TOOL_NAME} {flag} printed no JSON for {Path(path).name}: {out[:120]!r}",
                          "splat_transform_bad_output", transient=False) from exc
    if not isinstance(data, dict):
        raise _tool_error(f"{TOOL_NAME} {flag} printed {type(data).__name__}, not an object",
                          "splat_transform_bad_output", transient=False)
    return data


def read_info(tool: SplatTransform, path: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """``--info json`` of a splat file: ``format``, ``numGaussians``, ``shBands``, ... (decodes the file)."""
    return _read_json(tool, path, "--info", timeout_s)


def read_stats(tool: SplatTransform, path: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """``--stats json`` of a splat file: ``--info`` plus per-column statistics of level of detail 0."""
    return _read_json(tool, path, "--stats", timeout_s)


@dataclass(frozen=True)
class ColumnStats:
    """Statistics of one column as splat-transform reports them.

    Values are activated (opacity through a sigmoid, scales through exp, f_dc as colour 0..1);
    ``mean`` is the activation of the mean stored value, ``median`` comes from a histogram and is
    approximate; ``min`` and ``max`` are exact.
    """

    min: float
    max: float
    mean: float
    median: float
    nan_count: int
    inf_count: int


def column_stats(stats: dict[str, Any]) -> dict[str, ColumnStats]:
    """Per-column statistics from a ``--stats json`` document (the first level of detail)."""
    try:
        level = stats["stats"][0]
        data = level["data"]
        out = {}
        for i, name in enumerate(level["columns"]):
            out[name] = ColumnStats(
                min=float(data["min"][i]), max=float(data["max"][i]), mean=float(data["mean"][i]),
                median=float(data["median"][i]), nan_count=int(data["nanCount"][i]),
                inf_count=int(data["infCount"][i]),
            )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise _tool_error(f"unexpected {TOOL_NAME} --stats layout: {exc!r}",
                          "splat_transform_bad_output", transient=False) from exc
    return out


def tool_version(tool: SplatTransform, *, timeout_s: float = 60.0) -> str:
    """The version the tool reports (``--version``), e.g. ``"3.7.0"``."""
    done = run_splat_transform(tool, ["--version"], timeout_s=timeout_s, what="--version")
    out = (done.stdout + " " + done.stderr).strip()  # 3.x prints its version on stderr
    # "splat-transform v3.7.0 (0f60b17)" or a bare "3.7.0", depending on the build.
    for word in out.split():
        word = word.lstrip("v")
        if word[:1].isdigit():
            return word
    return out
