"""The pipeline's extension point: who runs the stages between intake and the publisher."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .runner import Runner, RunSummary


class StageExecutor(Protocol):
    """Runs fetch → predict → post-process for a ``Runner``.

    It takes admitted items from ``runner.todo`` (until ``END``), hands every outcome to the
    publisher with ``runner.send_result`` / ``runner.fail`` and puts ``END`` into ``runner.results``
    when it has nothing more to give. The runner keeps intake, leases and the one publisher.
    """

    def start(self, runner: Runner) -> list[threading.Thread]:
        """Start the stage threads; the runner waits for them (with its drain deadline)."""
        ...

    def finish(self, summary: RunSummary) -> None:
        """Add what only the executor knows (busy times of remote stages) and release its resources."""
        ...
