"""Several processes opening a brand-new local store at the same moment all succeed.

Switching a new SQLite file to WAL takes an exclusive lock, and SQLite refuses it at once ("database
is locked", no busy wait) while another process is opening the same file: seen in a two-client run.
"""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from sharp_dataset_pipeline.stores.local import LocalStore


def _open(root: str, barrier, out) -> None:  # type: ignore[no-untyped-def]
    barrier.wait()
    try:
        store = LocalStore(Path(root))
        store.open()
        store.close()
        out.put("ok")
    except Exception as exc:  # report any failure to the parent test
        out.put(repr(exc))


def test_concurrent_first_opens_never_fail(tmp_path: Path) -> None:
    ctx = mp.get_context("fork")
    failures = []
    for round_ in range(15):
        root = tmp_path / f"store{round_}"
        barrier, out = ctx.Barrier(4), ctx.Queue()
        procs = [ctx.Process(target=_open, args=(str(root), barrier, out)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
        failures += [r for r in (out.get(timeout=5) for _ in procs) if r != "ok"]
    assert not failures, failures[:3]
