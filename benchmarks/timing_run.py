"""The GPU benchmark's timing path: ``sharp-dataset run`` with untrained SHARP weights admitted.

``bench_gpu.py --random-weights`` runs this in a subprocess instead of ``python -m
sharp_dataset_pipeline.cli run``. It reads the same settings (environment, these flags) and calls
the same ``run_pipeline``, with ``timing_only=True``: the one switch that lets
``SHARP_RANDOM_WEIGHTS=1`` through, and only for ``--predictor sharp`` into a local folder that
does not exist yet (the benchmark deletes it afterwards). ``sharp-dataset run`` itself refuses the
setting with exit code 2. Not a way to make datasets.

    SHARP_RANDOM_WEIGHTS=1 python benchmarks/timing_run.py --source folder:DIR --store local:NEW \\
        --summary-json FILE
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from rich.console import Console

from sharp_dataset_pipeline.app import run_pipeline
from sharp_dataset_pipeline.cli_support import guarded, load_cli_settings


def main(argv: list[str]) -> int:
    """Parse the three flags, run once with ``timing_only=True``, write the summary JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--store", required=True)
    parser.add_argument("--summary-json", required=True, type=Path)
    args = parser.parse_args(argv)
    flags = {"source": args.source, "store": args.store, "predictor": "sharp"}
    # No .env file: a timing run takes its settings from the benchmark's environment only.
    settings = load_cli_settings(flags, env_file=os.devnull)
    summary = guarded(lambda: run_pipeline(settings, Console(stderr=True), timing_only=True))
    args.summary_json.parent.mkdir(parents=True, exist_ok=True)
    args.summary_json.write_text(json.dumps(asdict(summary), indent=2, default=str) + "\n", encoding="utf-8")
    weights = "RANDOM WEIGHTS" if settings.sharp_random_weights else "checkpoint"
    print(f"timing run ({weights}): published {summary.published}, "
          f"{summary.items_per_s:.3f} items/s over {summary.elapsed_s:.1f}s")
    return 1 if summary.stopped.startswith("error:") else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
