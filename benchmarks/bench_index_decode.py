"""Cost of stripping credentials from URLs when index rows are read.

Every ``IndexRow`` strips credential-bearing query parameters from its URL fields on construction, so
reading an index pays for it. In one run, on the same Unsplash-style rows (URLs with ``ixid``, ``w``,
``utm_*`` queries, each parameter checked): the time to decode them all (stripping included), and the time
of the stripping alone (``strip_url`` over the same URL values); prints the share stripping takes.

    .venv/bin/python benchmarks/bench_index_decode.py [--rows 20000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from sharp_dataset_pipeline.publish.index import decode_rows, encode_rows
from sharp_dataset_pipeline.records import IndexRow
from sharp_dataset_pipeline.redact import strip_url

URL_FIELDS = ("source_url", "page_url", "unsplash_url", "user_url", "gsplat_url")


def _rows(n: int) -> list[IndexRow]:
    return [IndexRow(id=f"i{k}", source="unsplash", unit="u",
                     source_url=f"https://images.unsplash.com/photo-{k}?ixid=M3w1234&ixlib=rb-4.0.3&w=1080",
                     page_url=f"https://unsplash.com/photos/{k}?utm_source=sharp&utm_medium=referral",
                     user_url="https://unsplash.com/@x") for k in range(n)]


def _best(fn: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = _rows(args.rows)
    data = encode_rows(rows)
    urls = [getattr(r, name) for r in rows for name in URL_FIELDS]
    decode = _best(lambda: decode_rows(data), args.repeat)
    strip = _best(lambda: [strip_url(u) for u in urls], args.repeat)
    print(f"{args.rows} rows, best of {args.repeat}: decode {decode * 1000:.0f} ms (stripping included), "
          f"stripping alone {strip * 1000:.0f} ms = {strip / decode:.0%} of decoding "
          f"({strip / args.rows * 1e6:.1f} us per row)")


if __name__ == "__main__":
    main()
