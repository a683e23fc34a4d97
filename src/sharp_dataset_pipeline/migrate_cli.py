"""``sharp-dataset migrate --to shards``: a files-layout dataset (ours, or the predecessor's) moved
into the sharded layout in bounded, resumable steps (``ops/migrate.py``).

Exit codes: 0 migrated (or nothing to do), 1 items that could not be migrated (the layout stays
files; each is named) or a store error, 2 invalid settings or usage.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from .cli_support import common_options, guarded, load_cli_settings
from .errors import StoreError
from .ops.migrate import MigrateProgress, MigrateResult, MigrateRun, migrate_to_shards
from .ops.migrate_items import MigrateOptions
from .settings import Settings
from .stores.base import ShardMigration, Store


def _open(settings: Settings) -> tuple[Store, ShardMigration]:
    """The store, opened as the dataset it is (``LAYOUT`` ignored: the dataset says), and its migration.
    Neither a missing local folder nor a missing Hub repo is created."""
    from .factories import make_store
    from .stores.hub import HubStore
    from .stores.local import LocalStore

    settings = settings.model_copy(update={"layout": ""})
    store = make_store(settings)
    if isinstance(store, LocalStore):
        if not store.root.is_dir():
            raise StoreError(f"{store.description}: no dataset there")
        store.open()
        from .stores.local_migrate import LocalMigration

        return store, LocalMigration(store, settings.client_id)
    if isinstance(store, HubStore):
        from .stores.hub_migrate import HubMigration, repo_exists

        if not repo_exists(store):
            raise StoreError(f"{store.description}: no such repo")
        store.open()
        return store, HubMigration(store, settings.client_id)
    raise StoreError(f"{store.description}: this store cannot be migrated")


class _Progress:
    """One line per landed step: items so far, the rate, and the time left at that rate."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def __call__(self, p: MigrateProgress) -> None:
        step, elapsed = p.landed, max(time.monotonic() - self._start, 1e-6)
        rate = p.done / elapsed
        left = f", ~{(p.total - p.done) / rate:.0f}s left" if rate > 0 and p.done < p.total else ""
        click.echo(f"step {p.step}/{p.steps}: {len(step.migrated_ids)} items into {len(step.shard_files)} shard "
                   f"files ({p.done}/{p.total}, {rate:.2f} items/s{left}); {step.deleted} old item folders or files "
                   "deleted", err=True)


def _report(result: MigrateResult) -> int:
    if result.nothing_to_do:
        click.echo(f"nothing to migrate in {result.store}: {result.nothing_to_do}")
        return 0
    resumed = f" ({result.already} were in shards already)" if result.already else ""
    click.echo(f"migrated {result.migrated} of {result.to_migrate} items in {result.steps} steps{resumed}; "
               f"{result.deleted} old item folders or files deleted")
    if result.failed:
        for item_id, why in sorted(result.failed.items()):
            click.echo(f"  not migrated: {item_id}: {why}")
        click.echo(f"{len(result.failed)} items stay in the files layout, so {result.store} stays files: fix or "
                   "remove them and run migrate again")
        return 1
    click.echo(f"{result.store} is in the shards layout now")
    return 0


@click.command("migrate")
@common_options
@click.option("--to", "target", type=click.Choice(["shards"]), required=True,
              help="The layout to move the dataset to (only shards: WebDataset tars + a Parquet index).")
@click.option("--step-items", type=click.IntRange(1, 100_000), default=None,
              help="Items per atomic step (default: 64 on the Hub, where a step's old item folders are deleted "
              "in one later commit of at most 100 files and folders; 256 on a local store).")
@click.option("--drop-ply", is_flag=True, help="Do not keep the full PLYs (the ply shards): only the SPZ made "
              "from each PLY, the photo, the camera and the preview.")
@click.option("--client-id", default=None, help="Who the migration commits as [env CLIENT_ID].")
def migrate_cmd(env_file: str, target: str, step_items: int | None, drop_ply: bool, **flags: Any) -> None:
    """Move an existing per-item dataset into the sharded layout, in bounded atomic steps.

    Works on this project's files layout and on the predecessor's (unsplash/<id>/<id>.ply and
    data/train.jsonl, whose rows are carried into the index; its original bytes are kept under
    .coord/migrate/ on the Hub). Each step packs a few items into shards and, in one atomic step,
    adds them and replaces those items' rows; old files are deleted only after the shards that
    hold them have landed. Interrupted (even by kill -9), run it again: it resumes. While it
    runs, readers see a mixed dataset (both kinds of rows read); at the end the layout marker says
    shards. Stop runs publishing to the dataset first.
    """
    settings = load_cli_settings(flags, env_file)
    run = MigrateRun(step_items=step_items or 0, items=MigrateOptions(keep_ply=not drop_ply))

    def go() -> MigrateResult:
        store, migration = _open(settings)
        try:
            with tempfile.TemporaryDirectory(prefix="sharp-migrate-") as work:
                return migrate_to_shards(migration, Path(work), run, _Progress())
        finally:
            store.close()

    sys.exit(_report(guarded(go)))
