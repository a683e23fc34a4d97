"""Plumbing shared by the CLI modules: the common options, settings loading, and turning known
errors into one line and an exit code (2 invalid settings, 1 other known errors)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console

from .errors import ConfigError, SharpDatasetError
from .settings import Settings, load_settings, near_miss_names

log = logging.getLogger(__name__)

STORE_HELP = (
    "Where the dataset lives [env STORE]: local:DIR or hf:USER/REPO. Default: hf:$HF_REPO_ID when HF_REPO_ID "
    "is set (and HF_UPLOAD=1), else local:sharp-dataset-out."
)


def common_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``--env-file``, ``--log-level`` and ``--store``, on every command."""
    fn = click.option("--env-file", default=".env", show_default=True, help="Optional .env file with settings.")(fn)
    fn = click.option("--log-level", default=None, help="DEBUG, INFO, WARNING, ERROR or CRITICAL [env LOG_LEVEL].")(fn)
    fn = click.option("--store", default=None, help=STORE_HELP)(fn)
    return fn


def fail(message: str, code: int) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def load_cli_settings(flags: dict[str, Any], env_file: str, renamed: dict[str, str] | None = None,
                      console: Console | None = None) -> Settings:
    """Flags (renamed to setting names where they differ) over env over ``.env``; then logging with masks."""
    renamed = renamed or {}
    overrides = {renamed.get(k, k): v for k, v in flags.items() if v is not None}
    env_path = env_file if Path(env_file).is_file() else None
    try:
        settings = load_settings(overrides, env_file=env_path)
    except ConfigError as exc:
        fail(str(exc), 2)
    from .observe.logs import setup_logging

    setup_logging(settings.log_level, [settings.secret("unsplash_access_key"), settings.secret("hf_token")],
                  console=console)
    for name, likely in near_miss_names(env_path):
        log.warning("%s in %s is not a setting and is ignored; did you mean %s?", name, env_file, likely)
    return settings


def guarded(fn: Callable[[], Any]) -> Any:
    """Run ``fn``; a known error becomes one line on stderr and the exit code."""
    try:
        return fn()
    except ConfigError as exc:
        fail(str(exc), 2)
    except SharpDatasetError as exc:
        fail(str(exc), 1)
