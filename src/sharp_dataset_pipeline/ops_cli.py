"""Commands that operate a dataset: ``status``, ``failures``, ``verify``, ``remove``, ``gc`` and ``gallery``.

Registered on the main group by ``cli.py`` (``main.add_command(status_cmd)`` and so on). Each works
on the configured store's ``StoreAdmin`` (``stores/base.py``), which every store provides.

Exit codes: 0 success (for ``verify``: the dataset is consistent), 1 problems found or a
store error, 2 invalid settings.
"""

from __future__ import annotations

import itertools
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import click

from .cli_support import common_options, fail, guarded, load_cli_settings
from .errors import RateLimited, SharpDatasetError
from .ledger.status import LedgerSnapshot, SourceUnits
from .settings import Settings
from .stores.base import Store

log = logging.getLogger(__name__)




def _store(settings: Settings) -> Store:
    """The configured store, not opened: its admin reads the local ledger directly, and the hub
    store's at a known head (opening it could create a repo for a mistyped name)."""
    from .factories import make_store

    return make_store(settings)


def _source_units(settings: Settings, snap: LedgerSnapshot) -> SourceUnits | None:
    """The configured source (SOURCE / --source) against the ledger, cut into units with the range
    size its runs used (read from the ledger's unit keys; RANGE_SIZE only for a source never run)."""
    if not settings.source:
        return None
    from .factories import make_source
    from .net import make_client
    from .ops.status import ledger_range_size, source_units, unit_prefix

    keys = [*snap.done_unit_keys, *(le.unit for le in snap.leases)]
    try:
        with make_client() as client:
            units = make_source(settings, client).units()
            first = next(units, None)
            if first is None:
                return source_units([], keys, settings.range_size)
            size = ledger_range_size(keys, unit_prefix(first.key), settings.per_page)
            if size is None or size == settings.range_size:
                return source_units(itertools.chain([first], units), keys, settings.range_size)
            log.info("status: the runs on %s used %d items per unit (RANGE_SIZE is %d); counting with %d",
                     settings.source, size, settings.range_size, size)
            ledger_settings = settings.model_copy(update={"range_size": size})
            return source_units(make_source(ledger_settings, client).units(), keys, size)
    except (SharpDatasetError, RateLimited, OSError) as exc:
        log.warning("no ETA: could not enumerate the source %s (%s)", settings.source, exc)
        return None


@click.command("status")
@common_options
@click.option("--source", default=None, help="Source whose size gives the ETA [env SOURCE]; unset: no ETA.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status_cmd(env_file: str, as_json: bool, **flags: Any) -> None:
    """Show the whole dataset: items, failures, units, every client's leases and rates, ETA.

    Rates are items per hour over the window each client actually worked in (at most the last
    hour / day); the ETA divides the items left in the source's unfinished units by that rate.
    """
    settings = load_cli_settings(flags, env_file)
    from .ledger.status import build_status, format_status
    from .ops.status import take_snapshot

    def run() -> Any:
        store = _store(settings)
        try:
            snap = take_snapshot(store.admin(), time.time())
            return build_status(snap, source=_source_units(settings, snap))
        finally:
            store.close()

    report = guarded(run)
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else format_status(report))


@click.command("verify")
@common_options
@click.option("--deep", is_flag=True, help="Also compare every file's SHA-256 with its row.")
@click.option("--fix", is_flag=True, help="Repair what is safe (orphan files, expired leases, index files "
              "regenerated from the ledger) in one step.")
@click.option("--dry-run", is_flag=True, help="With --fix: list what it would delete or repair, change nothing.")
@click.option("--yes", is_flag=True, help="With --fix: repair without asking (needed when stdin is not a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_cmd(env_file: str, deep: bool, fix: bool, dry_run: bool, yes: bool, as_json: bool,
               **flags: Any) -> None:
    """Check the dataset: files exist with their sizes (and hashes), no orphans or duplicates, sane leases.

    Every problem --fix cannot repair says what it needs. --fix first lists what it would do and
    asks (on a terminal); without a terminal it needs --yes. Exits 0 only when the dataset is
    consistent (after --fix, when given; --dry-run changes nothing).
    """
    settings = load_cli_settings(flags, env_file)
    if dry_run and not fix:
        fail("verify: --dry-run goes with --fix (it lists what --fix would do)", 2)
    if fix and not dry_run and not yes and not sys.stdin.isatty():
        fail("verify --fix deletes and rewrites files: add --yes to run it without a terminal "
             "(--fix --dry-run lists what it would do); nothing was changed", 2)

    def run(fix: bool) -> Any:
        from .ops.verify import verify

        store = _store(settings)
        try:
            return verify(store.admin(), time.time, deep=deep, fix=fix)
        finally:
            store.close()

    if fix and not dry_run and not yes:  # a terminal: show what it would do, then ask
        preview = guarded(lambda: run(False))
        preview.dry_run = True
        click.echo(preview.text())
        if not any(p.fixable for p in preview.problems):
            sys.exit(0 if preview.ok else 1)
        if not click.confirm("apply these repairs?", default=False):
            click.echo("nothing was changed")
            sys.exit(1)
    report = guarded(lambda: run(fix and not dry_run))
    report.dry_run = dry_run
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else report.text())
    sys.exit(0 if report.ok else 1)


@click.command("remove")
@common_options
@click.argument("item_ids", nargs=-1, required=True)
@click.option("--reason", default="removal requested", show_default=True, help="Why (kept with the exclusion).")
@click.option("--force", is_flag=True, help="Also exclude ids that were never published (else they are an error).")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted and excluded; change nothing.")
def remove_cmd(env_file: str, item_ids: tuple[str, ...], reason: str, force: bool, dry_run: bool,
               **flags: Any) -> None:
    """Take items down: delete their files and index rows, and exclude their ids for good.

    Excluded ids are never published again by any client. This is how removal requests
    (see the dataset card) are carried out. An id that was never published is refused
    (exit 2, nothing changed) unless --force: a typo would otherwise be excluded for ever.
    """
    settings = load_cli_settings(flags, env_file)

    def run() -> Any:
        from .ops.remove import remove

        store = _store(settings)
        try:
            return remove(store.admin(), list(item_ids), reason, time.time(), force=force, dry_run=dry_run)
        finally:
            store.close()

    click.echo(guarded(run).text())


@click.command("gc")
@common_options
def gc_cmd(env_file: str, **flags: Any) -> None:
    """Delete expired leases and leases on units already done."""
    settings = load_cli_settings(flags, env_file)

    def run() -> Any:
        from .ops.gc import gc

        store = _store(settings)
        try:
            return gc(store.admin(), time.time())
        finally:
            store.close()

    click.echo(guarded(run).text())


@click.command("gallery")
@common_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("gallery"),
              show_default=True, help="Folder of the site (updated in place; unchanged items are reused).")
@click.option("--runs", "runs_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of run folders (metrics.jsonl / gpu_mem_log.csv) for the report; only the runs that "
              "published to this store are shown [default: where `run` puts them, RUNS_DIR].")
@click.option("--title", default="SHARP Gaussian splats", show_default=True, help="Title of the site.")
@click.option("--per-page", type=int, default=120, show_default=True, help="Items per index page.")
@click.option("--serve", is_flag=True, help="Serve the site on 127.0.0.1 after building it (Ctrl+C stops).")
@click.option("--port", type=int, default=8000, show_default=True, help="Port for --serve (0: any free port).")
def gallery_cmd(env_file: str, out_dir: Path, runs_dir: Path | None, title: str, per_page: int, serve: bool,
                port: int, **flags: Any) -> None:
    """Build a static HTML gallery: thumbnails, item pages with a 3D viewer, a run report with plots."""
    settings = load_cli_settings(flags, env_file)
    from .ops.gallery.build import GalleryOptions, build_gallery
    from .ops.gallery.runs import read_runs, store_identity
    from .ops.status import publish_events

    def run() -> Any:
        store = _store(settings)
        try:
            admin = store.admin()
            rows = admin.rows()
            # The runs of THIS store only (a runs folder may be shared by several stores).
            runs = read_runs(runs_dir or settings.run_dir.parent, store=store_identity(settings.resolved_store()))
            return build_gallery(rows, admin, out_dir, runs=runs, events=publish_events(admin),
                                 options=GalleryOptions(title=title, per_page=per_page))
        finally:
            store.close()

    click.echo(guarded(run).text())
    if serve:
        _serve(out_dir, port)


def _serve(site: Path, port: int) -> None:
    from .ops.gallery.serve import GalleryServer

    try:
        server = GalleryServer(site, port)
    except OSError as exc:
        fail(f"cannot serve on 127.0.0.1:{port}: {exc} (try --port 0)", 1)
    click.echo(f"serving the gallery at {server.url}  (Ctrl+C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped")
    finally:
        server.stop()


@click.command("failures")
@common_options
@click.option("--reason", default=None, help="Only the items that failed for this reason (e.g. http_404, empty_file).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list (full details, every field).")
@click.option("--skips", is_flag=True,
              help="List instead the inputs this store's runs skipped as repeats of another (duplicate_content, "
              "duplicate_id, duplicate_row, duplicate_url): id, source, reason, duplicate_of, run, detail "
              "(from items.jsonl).")
@click.option("--runs", "runs_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of run folders read by --skips [default: where `run` puts them, RUNS_DIR].")
def failures_cmd(env_file: str, reason: str | None, as_json: bool, skips: bool, runs_dir: Path | None,
                 **flags: Any) -> None:
    """List every item that failed and was never published: id, source path or URL (credentials
    removed), stage, reason, attempts, last time, detail; one tab-separated line each.

    Each run also writes <run folder>/stats.json (its counts by status and by reason) and
    <run folder>/items.jsonl (one status line per input).
    """
    settings = load_cli_settings(flags, env_file)
    if skips:
        _list_skips(runs_dir or settings.run_dir.parent, settings.resolved_store(), reason, as_json)
        return
    from .ops.failures import failure_json, format_failures, select

    def run() -> Any:
        store = _store(settings)
        try:
            return store.admin().failed_items()
        finally:
            store.close()

    items = select(guarded(run), reason)
    click.echo(json.dumps([failure_json(f) for f in items], indent=2) if as_json else format_failures(items))


def _list_skips(runs_dir: Path, store_spec: str, reason: str | None, as_json: bool) -> None:
    from .ops.gallery.runs import store_identity
    from .ops.skips import format_skips, repeat_skips, skip_json

    found = [s for s in repeat_skips(runs_dir, store_identity(store_spec)) if reason is None or s.reason == reason]
    click.echo(json.dumps([skip_json(s) for s in found], indent=2) if as_json else format_skips(found))


COMMANDS = (status_cmd, verify_cmd, remove_cmd, gc_cmd, gallery_cmd, failures_cmd)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
def ops_main() -> None:
    """Operate a sharp-dataset dataset (the same commands as ``sharp-dataset status`` etc.)."""


for _command in COMMANDS:
    ops_main.add_command(_command)

if __name__ == "__main__":
    ops_main()
