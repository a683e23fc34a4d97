"""The predecessor's entry point, kept: ``python sharp_dataset_pipeline_main.py``.

Configured by environment variables (and an optional .env) only, exactly like ``sharp-dataset run``
with no flags.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from sharp_dataset_pipeline.cli import main
except ImportError:  # running from a checkout without `pip install`
    sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))
    from sharp_dataset_pipeline.cli import main

if __name__ == "__main__":
    main(["run", *sys.argv[1:]], prog_name="sharp_dataset_pipeline_main.py")
