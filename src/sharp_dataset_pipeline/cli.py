"""The ``sharp-dataset`` command. Known errors become one readable line and an exit code.

Exit codes of ``run`` (see EXIT_CODES_HELP): 0 the run did its work (item failures are data),
1 it could not publish / processed nothing / hit a full disk / an error, 2 invalid settings or
usage, 3 stopped by a rate limit with nothing to do until the window reopens.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

from . import __version__
from .cli_support import common_options, guarded, load_cli_settings

if TYPE_CHECKING:
    from .pipeline.runner import RunSummary

log = logging.getLogger(__name__)
RENAMED = {"batch_size": "hf_upload_batch_size"}
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_RATE_LIMITED = 0, 1, 2, 3
EXIT_CODES_HELP = (
    "\b\nExit codes:\n"
    "  0  the run did its work: items published, or nothing left to do (failed items are data, see the summary)\n"
    "  1  the store could not publish, no item was published and at least one failed, the disk is full,\n"
    "     work was still stuck at the drain deadline (STOP_DRAIN_SECS), or an internal error\n"
    "  2  invalid settings or usage (one line naming the setting)\n"
    "  3  stopped by a rate limit: nothing to do until the window reopens (the summary says when)"
)

SOURCE_HELP = (
    "What to read [env SOURCE]: samples (the bundled photos), folder:PATH, manifest:PATH_OR_URL "
    "(CSV/TSV/JSONL of ids and image URLs), unsplash-search (or search), unsplash-list (or list), "
    "unsplash-topic:SLUG, unsplash-user:NAME, unsplash-collection:ID. "
    "Default: search when UNSPLASH_ACCESS_KEY is set, else samples."
)




@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="sharp-dataset")
def main() -> None:
    """Turn photos into a published dataset of 3D Gaussian splats (Apple SHARP).

    Every option can also be set by the environment variable named in its help (the
    predecessor's names) or in a .env file; flags win over the environment.
    """


@main.command(epilog=EXIT_CODES_HELP)
@common_options
@click.option("--source", default=None, help=SOURCE_HELP)
@click.option(
    "--predictor", default=None,
    help="auto (SHARP in-process, else the sharp command, else an explanation), sharp, sharp-cli, or "
    "planar (a CPU stand-in that is NOT SHARP: for demos and tests) [env PREDICTOR / SHARP_BACKEND].",
)
@click.option("--max-images", type=int, default=None, help="Stop after admitting this many new items; 0 = no limit "
              "[env MAX_IMAGES, default 0].")
@click.option("--max-scan", type=int, default=None, help="Stop after enumerating this many items; 0 = no limit "
              "[env MAX_SCAN, default 0].")
@click.option("--range-size", type=int, default=None, help="Items per unit (lease granularity) [env RANGE_SIZE, 300].")
@click.option("--client-id", default=None, help="Stable id of this machine [env CLIENT_ID, default host+user].")
@click.option("--run-id", default=None, help="Name of the run folder runs/<RUN_ID> [env RUN_ID, default a timestamp].")
@click.option("--batch-size", type=int, default=None, help="Items per publish step [env HF_UPLOAD_BATCH_SIZE, 32].")
@click.option("--publish-formats", default=None,
              help="What is published per item, comma-separated: ply, preview, spz, sog, compressed.ply, html, "
              "small.ply [env PUBLISH_FORMATS; default spz,preview in the shards layout, ply,preview in files].")
@click.option("--layout", type=click.Choice(["shards", "files"]), default=None,
              help="Layout of a NEW dataset: shards (WebDataset tars + a Parquet index) or files (per-item "
              "files); an existing dataset keeps its own [env LAYOUT, default: the dataset's, shards when new].")
@click.option("--executor", type=click.Choice(["thread", "ray"]), default=None,
              help="thread (this machine) or ray (Ray Data: a GPU actor pool, needs the [ray] extra) "
              "[env EXECUTOR, thread].")
@click.option("--ray-address", default=None, help="Join this Ray cluster (auto, ray://HOST:10001); empty: start "
              "a local Ray sized to this machine [env RAY_ADDRESS].")
@click.option("--ray-predict-rows", type=click.IntRange(1, 4096), default=None,
              help="Photos per call of a Ray predictor actor, predicted batch by batch while the last batch's "
              "results are handed on; more spreads Ray's per-call time over more photos, each holds a "
              "prediction (~66 MB for SHARP) in Ray's object store [env RAY_PREDICT_ROWS, 4 predictor batches].")
@click.option("--planar-resolution", type=int, default=None,
              help="Long side in pixels of the planar predictor's grid [env PLANAR_RESOLUTION, 256].")
@click.option("--redo", type=click.Choice(["failed", "model-changed", "all"]), default=None,
              help="Reprocess on purpose: failed items, items published by another predictor or model version, "
              "or all; their files and rows are replaced in the same atomic publish step [env REDO].")
@click.option("--public", "hf_public", is_flag=True, default=None, help="Create a missing Hub repo as public.")
@click.option("--progress", type=click.Choice(["auto", "rich", "plain", "none"]), default=None,
              help="Live display on a terminal, heartbeat lines elsewhere [env PROGRESS, auto].")
@click.option("--summary-json", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the final summary as JSON to this file.")
def run(env_file: str, summary_json: Path | None, **flags: Any) -> None:
    """Run the pipeline: source → fetch → predict → post-process → publish.

    Stop safely with Ctrl+C, SIGTERM or a STOP file in CONTROL_DIR (default: the run folder):
    work in flight is published, unfinished units are released, and the next run resumes.
    A PAUSE file there pauses intake until it is removed.
    """
    console = Console(stderr=True)
    settings = load_cli_settings(flags, env_file, RENAMED, console=console)
    from .app import run_pipeline

    summary = guarded(lambda: run_pipeline(settings, console))
    if summary_json is not None:
        summary_json.parent.mkdir(parents=True, exist_ok=True)
        summary_json.write_text(json.dumps(asdict(summary), indent=2, default=str) + "\n", encoding="utf-8")
    _print_summary(summary)
    sys.exit(exit_code(summary))


def exit_code(summary: RunSummary) -> int:
    """The documented exit code of a finished run (EXIT_CODES_HELP)."""
    if summary.stop_cause in ("error", "store_failed", "disk_full", "drain_deadline"):
        return EXIT_FAILED
    if summary.failed_total and not (summary.published or summary.already_published):
        return EXIT_FAILED
    if summary.stop_cause == "rate_limit":
        return EXIT_RATE_LIMITED
    return EXIT_OK


@main.command()
@common_options
def compact(env_file: str, **flags: Any) -> None:
    """Merge the index shards into the index file (HF_INDEX_REPO_PATH) in one atomic step."""
    settings = load_cli_settings(flags, env_file, RENAMED)
    from .factories import make_store

    def _do() -> int:
        store = make_store(settings, create=False)
        store.open()
        try:
            return store.compact()
        finally:
            store.close()

    rows = guarded(_do)
    click.echo(f"compacted: {rows} rows in {settings.hf_index_repo_path} ({settings.resolved_store()})")


@main.command()
@common_options
@click.option("--missing", is_flag=True, help="Share every published item that has no share yet (today the only "
              "mode, so it must be given).")
@click.option("--limit", type=int, default=None, help="Share at most this many items in this pass.")
def share(env_file: str, missing: bool, limit: int | None, **flags: Any) -> None:
    """Share published items on gsplat.org (GSPLAT_BASE) and record the viewer URLs in the index.

    Uses GSPLAT_USE_SMALL_PLY / GSPLAT_FILTER_VISIBILITY like the pipeline. On the hub store the
    files are downloaded to share them, and the new fields are recorded in one commit per 50 items.
    """
    if not missing:
        raise click.UsageError("say what to share: --missing (every published item without a share yet)")
    settings = load_cli_settings(flags, env_file, RENAMED)
    from .app import share_missing_items

    result = guarded(lambda: share_missing_items(settings, limit))
    failed = ", ".join(f"{k}: {v}" for k, v in sorted(result.failed.items())) or "none"
    click.echo(f"shared {len(result.shared)}, already shared {result.already}, failed {len(result.failed)} ({failed})")


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _print_summary(summary: RunSummary) -> None:
    failed = ", ".join(f"{k}: {v}" for k, v in sorted(summary.failed.items())) or "none"
    skipped = sum(summary.skipped.values())
    skipped_why = ", ".join(f"{k}: {v}" for k, v in sorted(summary.skipped.items()))
    click.echo(f"dataset: {summary.store}")
    click.echo(f"predictor: {summary.predictor} ({summary.model_version})")
    click.echo(f"run: started {_clock(summary.started_at)}, ended {_clock(summary.ended_at)}; folder {summary.run_dir}")
    click.echo(
        f"published {summary.published}, failed {summary.failed_total} ({failed}), skipped {skipped}"
        + (f" ({skipped_why})" if skipped_why else "") + ", "
        f"{summary.items_per_s:.2f} items/s over {summary.elapsed_s:.1f}s"
        + (f"; stopped: {summary.stopped}" if summary.stopped else "")
    )
    units = summary.units
    if units.get("units_already_done") or units.get("units_leased_elsewhere"):
        click.echo(
            f"units: {units.get('units_already_done', 0)} already done, "
            f"{units.get('units_leased_elsewhere', 0)} leased by other clients, "
            f"{units.get('units_leased', 0)} worked on"
        )
    ray_info = summary.extra.get("ray")
    if ray_info:
        busy = ", ".join(f"{stage} {secs:.1f}s" for stage, secs in sorted(summary.busy_s.items()))
        click.echo(f"ray: {len(ray_info['actors'])} predictor actor(s) on {ray_info['gpus']:g} GPU(s), busy "
                   f"{100 * ray_info['gpu_busy_fraction']:.1f}% of their time; stage busy time: {busy}")
    for note in summary.notes:
        click.echo(note)
    if summary.shares:
        left = summary.shares.get("left_for_share_missing", 0)
        click.echo(f"gsplat shares: {summary.shares.get('shared', 0)} made, {left} left for "
                   "sharp-dataset share --missing" + (f" ({summary.shares.get('failed', 0)} failed)" if left else ""))
    if summary.rate_limited_until:
        when = _clock(summary.rate_limited_until)
        click.echo(f"rate limit reached after {summary.published} items; the window reopens at {when}")


def _register_operations() -> None:
    from .ops_cli import failures_cmd, gallery_cmd, gc_cmd, remove_cmd, status_cmd, verify_cmd

    for command in (status_cmd, failures_cmd, verify_cmd, remove_cmd, gc_cmd, gallery_cmd):
        main.add_command(command)
    from .convert_cli import convert_cmd

    main.add_command(convert_cmd)
    from .push_cli import push_cmd

    main.add_command(push_cmd)
    from .migrate_cli import migrate_cmd

    main.add_command(migrate_cmd)


_register_operations()

if __name__ == "__main__":
    main()
