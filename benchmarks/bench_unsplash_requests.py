"""Unsplash API requests per published photo, against the loopback Unsplash emulator.

The real pipeline (runner, fetch, planar predictor, local store, download tracking) runs the
``list`` source over a generated editorial feed with ``PER_PAGE=30`` and ``RANGE_SIZE=300``, once
with ``UNSPLASH_DETAILS=never`` and once with ``always``. The emulator counts every API call
(listing, details, tracking; image bytes come from its CDN path and are not API calls).

Targets (issue 3): at most 1.05 requests per published photo with ``never`` (1/30 of a listing
page + one tracking call) and at most 2.05 with ``always`` (+ one details call). Every published
photo must be tracked exactly once.

    python benchmarks/bench_unsplash_requests.py [--quick] [--photos 900]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from emulators.unsplash import UnsplashEmulator  # noqa: E402
from sharp_dataset_pipeline.observe.events import Metrics  # noqa: E402
from sharp_dataset_pipeline.pipeline.runner import Runner, RunOptions  # noqa: E402
from sharp_dataset_pipeline.pipeline.stop import StopControl  # noqa: E402
from sharp_dataset_pipeline.predict.planar import PlanarPredictor  # noqa: E402
from sharp_dataset_pipeline.sources.unsplash import UnsplashOptions, UnsplashSource  # noqa: E402
from sharp_dataset_pipeline.stores.local import LocalStore  # noqa: E402

TARGETS = {"never": 1.05, "always": 2.05}
KEY = "bench-access-key-0001"


def run_once(root: Path, photos: int, details: str) -> dict[str, float]:
    """One full run over a fresh catalogue and store; returns the counts that matter."""
    with UnsplashEmulator(n_photos=photos, access_key=KEY, leading_dash_ids=False) as emu, \
            httpx.Client(timeout=10) as client:
        options = UnsplashOptions("list", access_key=KEY, api_base=emu.base_url, range_size=300, per_page=30,
                                  details=details)
        source = UnsplashSource(options, client=client)
        store = LocalStore(root / f"store-{details}")
        store.open()
        opts = RunOptions.of(client_id="bench", run_dir=root / f"run-{details}", subdir="unsplash", batch_size=32)
        runner = Runner(source, store, PlanarPredictor(resolution=32), opts, Metrics(),
                        StopControl(root / f"control-{details}"), http_client=client)
        summary = runner.run()
        pending = len(store.pending_followups(source.followup_kind))
        store.close()
        return {
            "published": summary.published,
            "api_requests": emu.api_requests,
            "listing": emu.counts["/photos"],
            "details": emu.counts["/photos/:id"],
            "tracking": emu.counts["/photos/:id/download"],
            "tracked_once": sum(1 for n in emu.tracked.values() if n == 1),
            "pending": pending,
            "limit_responses": emu.limit_responses,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="300 photos instead of 900")
    parser.add_argument("--photos", type=int, default=900)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    photos = 300 if args.quick else args.photos
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for details, target in TARGETS.items():
            c = run_once(Path(tmp), photos, details)
            per_photo = c["api_requests"] / max(1, c["published"])
            passed = per_photo <= target and c["published"] == photos and c["tracked_once"] == photos
            ok = ok and passed
            print(f"UNSPLASH_DETAILS={details}: {photos} photos, published {c['published']:.0f}; "
                  f"API requests {c['api_requests']:.0f} (listing {c['listing']:.0f}, details {c['details']:.0f}, "
                  f"tracking {c['tracking']:.0f}); tracked once {c['tracked_once']:.0f}, pending {c['pending']:.0f}, "
                  f"limit responses {c['limit_responses']:.0f}")
            print(f"  requests per published photo: {per_photo:.4f}  (target <= {target})  "
                  f"{'ok' if passed else 'FAIL'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
