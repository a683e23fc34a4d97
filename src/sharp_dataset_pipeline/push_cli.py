"""``sharp-dataset push --from local:DIR --to hf:OWNER/NAME``: publish a dataset built locally on the Hub.

Registered on the main group by ``cli.py``. The work is ``ops.push`` (the plan and the loop) over
``stores.hub_push`` (one compare-and-swap commit per step) and ``stores.local_export`` (the local
rows and done units, read without opening the local store). Exit codes: 0 pushed (or nothing left
to push), 1 a store error (the push can simply be run again), 2 invalid usage or a dataset in the
files layout on either side.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from .cli_support import fail, guarded, load_cli_settings
from .errors import ConfigError
from .publish.layout_choice import SHARDS
from .publish.transfer_plan import DEFAULT_STEP_BYTES, DEFAULT_STEP_FILES
from .stores.hub_push import PushOutcome

if TYPE_CHECKING:
    from .ops.push import PushOptions, PushReport
    from .settings import Settings
    from .stores.local_export import LocalDataset

log = logging.getLogger(__name__)

PUSH_HELP = """Publish a local store (built with `run --store local:DIR`) on the Hub, shards as they are.

\b
  sharp-dataset push --from local:./my-splats --to hf:me/splats

Every WebDataset tar of the local store is uploaded byte for byte (through LFS, before the commit
that references it), with its rows in new index shards (JSONL and Parquet), in bounded commits of
at most --step-files tars; the local units done go along as done markers, so a later
`run --store hf:me/splats` over the same photos publishes none of them again; the local removals
and the failure records of items never published go along in the first commit (`failures` lists
them there, and a run there skips what failed for good). Commits stay under
HF_COMMITS_PER_HOUR. Interrupted (Ctrl+C, a crash, kill -9)? Run the same command again: what
landed is found at the target and nothing is sent twice. At the end the target's index is compacted
(one more commit) unless --no-compact.

The target must be new or in the sharded layout; a local store in the files layout must be
converted first (`sharp-dataset migrate --to shards`). The token comes from HF_TOKEN (or the
Hugging Face login) and is never printed.
"""

EXIT_HELP = ("\b\nExit codes:\n  0  pushed, or nothing was left to push\n"
             "  1  a store error: nothing half-done is left, run the same command again\n"
             "  2  invalid usage, or a dataset in the files layout on either side")


class _Plain:
    """A line per landed commit (no terminal, or --progress plain)."""

    def __init__(self) -> None:
        self._commits, self._done = 0, 0

    def planned(self, commits: int, items: int, size: int) -> None:
        self._commits = commits
        click.echo(f"push: {commits} commits to make, {items} items, {size / 1e6:.1f} MB of shards", err=True)

    def landed(self, outcome: PushOutcome) -> None:
        self._done += 1
        what = "nothing left to send" if not outcome.commit else (
            f"{len(outcome.published)} items, {len(outcome.shards)} shards, {outcome.tar_bytes / 1e6:.1f} MB, "
            f"{len(outcome.units_done)} units done")
        click.echo(f"push: commit {self._done}/{self._commits}: {what}", err=True)


class _Live:
    """A rich progress bar over the shard bytes, with commits and items (a terminal)."""

    def __init__(self, console: Console) -> None:
        self._bar = Progress(TextColumn("[bold]push[/]"), BarColumn(), DownloadColumn(),
                             TextColumn("{task.fields[commits]} commits, {task.fields[items]} items"),
                             TimeElapsedColumn(), console=console, transient=False)
        self._task: TaskID | None = None
        self._commits, self._items, self._total_commits, self._total_items = 0, 0, 0, 0

    def __enter__(self) -> _Live:
        self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()

    def planned(self, commits: int, items: int, size: int) -> None:
        self._task = self._bar.add_task("push", total=max(size, 1), commits=f"0/{commits}", items=f"0/{items}")
        self._total_commits, self._total_items = commits, items

    def landed(self, outcome: PushOutcome) -> None:
        if self._task is None:
            return
        self._commits += 1
        self._items += len(outcome.published)
        self._bar.update(self._task, advance=outcome.tar_bytes, commits=f"{self._commits}/{self._total_commits}",
                         items=f"{self._items}/{self._total_items}")


def _local_dir(spec: str) -> Path:
    kind, _, arg = spec.partition(":")
    if kind != "local" or not arg:
        raise ConfigError(f"push: --from takes a local store, local:DIR, got {spec!r}")
    return Path(arg).expanduser()


def _hub_spec(spec: str) -> str:
    kind, _, arg = spec.partition(":")
    if kind not in ("hf", "hub") or "/" not in arg:
        raise ConfigError(f"push: --to takes a Hub dataset, hf:OWNER/NAME, got {spec!r}")
    return f"hf:{arg}"


@click.command("push", help=PUSH_HELP, epilog=EXIT_HELP)
@click.option("--from", "source", required=True, metavar="local:DIR", help="The local store to push.")
@click.option("--to", "target", required=True, metavar="hf:OWNER/NAME",
              help="The Hub dataset to push to: new (created private unless --public) or sharded.")
@click.option("--step-files", type=int, default=DEFAULT_STEP_FILES, show_default=True,
              help="Shard tars per commit at most (the rows of one tar always travel together).")
@click.option("--step-bytes", type=int, default=DEFAULT_STEP_BYTES, show_default=True,
              help="About this many bytes of tars per commit (a bigger group goes alone).")
@click.option("--no-compact", is_flag=True, help="Leave the pushed index shards uncompacted (no final commit).")
@click.option("--public", "hf_public", is_flag=True, default=None, help="Create a missing Hub repo as public.")
@click.option("--client-id", default=None, help="Who pushes, in the commits' progress file [env CLIENT_ID].")
@click.option("--progress", type=click.Choice(["auto", "rich", "plain", "none"]), default=None,
              help="A live bar on a terminal, a line per commit elsewhere [env PROGRESS, auto].")
@click.option("--env-file", default=".env", show_default=True, help="Optional .env file with settings.")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR or CRITICAL [env LOG_LEVEL].")
def push_cmd(source: str, target: str, step_files: int, step_bytes: int, no_compact: bool, env_file: str,
             **flags: Any) -> None:
    console = Console(stderr=True)
    try:
        root, spec = _local_dir(source), _hub_spec(target)
    except ConfigError as exc:
        fail(str(exc), 2)
    settings = load_cli_settings({**flags, "store": spec}, env_file, console=console)
    from .ops.push import PushOptions

    options = guarded(lambda: PushOptions(step_files=step_files, step_bytes=step_bytes, compact=not no_compact))
    mode = settings.progress
    if mode == "auto":
        mode = "rich" if sys.stderr.isatty() else "plain"
    report = guarded(lambda: _push(settings, root, spec, options, mode, console))
    click.echo(report.text())


def _push(settings: Settings, root: Path, spec: str, options: PushOptions, mode: str,
          console: Console) -> PushReport:
    from .ops.push import check_source
    from .stores.local_export import held_for_push

    with held_for_push(root, time.time()) as dataset:
        check_source(dataset)  # refused before the Hub is even asked
        return _push_held(settings, dataset, spec, options, mode, console)


def _push_held(settings: Settings, dataset: LocalDataset, spec: str, options: PushOptions, mode: str,
               console: Console) -> PushReport:
    from .factories import hub_options
    from .ops.push import NoProgress, push_dataset
    from .stores.hub import HubStore
    from .stores.hub_push import HubPushTarget

    store = HubStore(dataclasses.replace(hub_options(settings, spec.partition(":")[2]), layout=SHARDS,
                                         new_layout=SHARDS))
    work = Path(tempfile.mkdtemp(prefix="sharp-push-"))
    try:
        found = HubPushTarget.layout_at_head(store)
        if found is not None and found != SHARDS:
            raise ConfigError(f"push: {spec} is in the {found} layout; push needs a new or sharded dataset: "
                              f"push to a new repo, or convert this one with `sharp-dataset migrate --to shards "
                              f"--store {spec}` first")
        store.open()
        target = HubPushTarget(store, dataset.file, dataset.rows_of, work / "step", time.time)
        if mode == "rich":
            with _Live(console) as live:
                return push_dataset(dataset, target, options, target_name=spec, compact=store.compact, progress=live)
        progress = _Plain() if mode == "plain" else NoProgress()
        return push_dataset(dataset, target, options, target_name=spec, compact=store.compact, progress=progress)
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)
