"""``sharp-dataset convert``: Gaussian splat PLY files (SHARP's or any 3DGS layout) to the publish formats.

Everything runs in this one process: ``spz`` with our own encoder (every SH band of the input kept), ``ply``
(SHARP's layout, SH degree 0) and ``small.ply`` / ``preview`` with our own code; ``sog``, ``compressed.ply``
and ``html`` through splat-transform, which reads the input file itself. Every output is checked like a
published file and written atomically (never a partial file under the final name).

Exit codes: 0 every file converted, 1 at least one input failed (each failure is one line on stderr; the
other inputs are still converted), 2 invalid usage or settings (also: splat-transform needed and missing).
"""

from __future__ import annotations

import os
import secrets
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .cli_support import fail, load_cli_settings
from .errors import ConfigError, PermanentError, SharpDatasetError
from .splat.formats import (
    FORMAT_NAMES,
    FormatOptions,
    check_spz,
    ext_for,
    make_extra_files,
    needs_splat_transform,
    parse_formats,
)
from .splat.ply import write_ply
from .splat.ply_any import SplatPly, read_splat_ply
from .splat.spz import SpzError, encode_spz

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


@dataclass(frozen=True)
class Target:
    """One output of one input: its format and final path."""

    fmt: str
    path: Path


def _stem(src: Path) -> str:
    name = src.name
    for suffix in (".compressed.ply", ".ply"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return src.stem


def plan_targets(inputs: list[Path], formats: tuple[str, ...], opts: FormatOptions, output: Path | None,
                 output_dir: Path | None) -> list[list[Target]]:
    """The outputs of each input, in input order; raises ``ConfigError`` for an unusable combination."""
    if (output is None) == (output_dir is None):
        raise ConfigError("give exactly one of --output FILE (one input, one format) or --output-dir DIR")
    if output is not None:
        if len(inputs) != 1 or len(formats) != 1:
            raise ConfigError("--output FILE takes one input and one --to format; use --output-dir for more")
        return [[Target(formats[0], output)]]
    assert output_dir is not None
    plans = [[Target(f, output_dir / f"{_stem(src)}.{ext_for(f, opts)}") for f in formats] for src in inputs]
    seen: dict[Path, Path] = {}
    for src, plan in zip(inputs, plans, strict=True):
        for t in plan:
            if t.path.resolve() in seen:
                raise ConfigError(f"{src} and {seen[t.path.resolve()]} would both write {t.path}")
            if t.path.resolve() == src.resolve():
                raise ConfigError(f"{src} would be overwritten by its own conversion; choose another --output-dir")
            seen[t.path.resolve()] = src
    return plans


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{secrets.token_hex(4)}-{path.name}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _made_elsewhere(src: Path, splat: SplatPly, targets: list[Target], opts: FormatOptions) -> None:
    """The formats ``formats.make_extra_files`` makes (the publish path), each moved to its target."""
    by_folder: dict[Path, list[Target]] = {}
    for t in targets:
        by_folder.setdefault(t.path.parent, []).append(t)
    for folder, group in by_folder.items():
        item_id = f".tmp-{secrets.token_hex(4)}-{_stem(src)}"
        made = make_extra_files(splat.gaussians, src, item_id, folder,
                                replace(opts, formats=tuple(t.fmt for t in group)))
        try:
            for f, t in zip(made, group, strict=True):
                os.replace(f.local_path, t.path)
        finally:
            for f in made:
                f.local_path.unlink(missing_ok=True)


def convert_file(src: Path, targets: list[Target], opts: FormatOptions) -> None:
    """Convert one input into every target; raise a ``SharpDatasetError`` saying what went wrong."""
    splat = read_splat_ply(src)
    others = []
    for t in targets:
        t.path.parent.mkdir(parents=True, exist_ok=True)
        if t.fmt == "spz":
            try:
                data = encode_spz(splat.arrays, version=opts.spz_version)
            except SpzError as exc:
                raise PermanentError(f"cannot be stored as SPZ: {exc}", reason="spz_unencodable") from exc
            _write_atomically(t.path, data)
            check_spz(t.path)
        elif t.fmt == "ply":
            write_ply(splat.gaussians, t.path)
        else:
            others.append(t)
    if others:
        _made_elsewhere(src, splat, others, opts)


def _progress(console: Console, total: int) -> Progress:
    return Progress(TextColumn("converting"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    TextColumn("{task.description}"), console=console, disable=total < 2 or not console.is_terminal)


def run_conversions(inputs: list[Path], plans: list[list[Target]], opts: FormatOptions, overwrite: bool,
                    console: Console) -> int:
    """Convert every input in turn (a failing one does not stop the others); return the exit code."""
    failed = 0
    with _progress(console, len(inputs)) as progress:
        task = progress.add_task("", total=len(inputs))
        for src, targets in zip(inputs, plans, strict=True):
            progress.update(task, description=src.name)
            t0 = time.perf_counter()
            existing = [t.path for t in targets if t.path.exists()]
            try:
                if existing and not overwrite:
                    raise PermanentError(f"{existing[0]} exists (use --overwrite)", reason="exists")
                convert_file(src, targets, opts)
            except (SharpDatasetError, OSError) as exc:
                failed += 1
                progress.console.print(f"error: {src}: {exc}", markup=False, highlight=False, soft_wrap=True)
            else:
                sizes = ", ".join(f"{t.path} ({t.path.stat().st_size / 1e6:.2f} MB)" for t in targets)
                click.echo(f"{src} -> {sizes} in {time.perf_counter() - t0:.2f} s")
            progress.advance(task)
    if failed:
        click.echo(f"{failed} of {len(inputs)} inputs failed", err=True)
    return EXIT_FAILED if failed else EXIT_OK


@click.command("convert")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--to", "to", required=True,
              help=f"Output format(s), comma-separated: {', '.join(FORMAT_NAMES)}.")
@click.option("--output-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write <input name>.<format> files into this folder (made if missing).")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write this file (one input, one format).")
@click.option("--spz-version", type=int, default=None, help="SPZ container 4 (zstd) or 3 (gzip) [env SPZ_VERSION, 4].")
@click.option("--overwrite", is_flag=True, help="Replace outputs that already exist.")
@click.option("--env-file", default=".env", show_default=True, help="Optional .env file with settings.")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR or CRITICAL [env LOG_LEVEL].")
def convert_cmd(inputs: tuple[Path, ...], to: str, output_dir: Path | None, output: Path | None,
                overwrite: bool, env_file: str, **flags: Any) -> None:
    """Convert Gaussian splat PLY files (SHARP's or any 3DGS layout) into other formats, in one process.

    Example: sharp-dataset convert scenes/*.ply --to spz --output-dir out/
    """
    console = Console(stderr=True)
    settings = load_cli_settings(flags, env_file, console=console)
    try:
        formats = parse_formats(to)
        opts = FormatOptions(formats=formats, preview_long_side=settings.preview_long_side,
                             small_ply_keep=settings.small_ply_keep,
                             timeout_s=settings.format_timeout_secs, splat_transform_bin=settings.splat_transform_bin,
                             spz_version=settings.spz_version)
        plans = plan_targets(list(inputs), formats, opts, output, output_dir)
        if needs_splat_transform(formats):
            from .splat.convert import locate_splat_transform

            locate_splat_transform(opts.splat_transform_bin)
    except ConfigError as exc:
        fail(str(exc).replace("PUBLISH_FORMATS", "--to"), EXIT_USAGE)
    sys.exit(run_conversions(list(inputs), plans, opts, overwrite, console))
