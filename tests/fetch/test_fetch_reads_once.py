"""The fetch stage reads a photo's bytes once: the copy, its hash and the decoder share one read.

Measured with the kernel's own count of bytes this process read (``rchar`` in ``/proc/self/io``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emulators.files import encode
from sharp_dataset_pipeline.fetch.fetcher import fetch_item
from sharp_dataset_pipeline.records import Item

IO = Path("/proc/self/io")


def _bytes_read() -> int:
    fields = dict(line.split(": ") for line in IO.read_text().splitlines())
    return int(fields["rchar"])


@pytest.mark.skipif(not IO.exists(), reason="needs Linux /proc/self/io")
def test_a_local_photo_is_read_once_before_the_model_sees_it(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (900, 1200, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise), "PNG")  # ~3 MB: far above any file read on the side
    src = tmp_path / "photo.png"
    src.write_bytes(data)
    item = Item(id="p1", source="test", unit="u", offset=0, path=str(src))
    limits = {"max_pixels": 10_000_000, "max_bytes": 50_000_000, "attempts": 1}
    fetch_item(Item(id="warm", source="test", unit="u", offset=0, path=str(src)), tmp_path / "warm", None, **limits)

    before = _bytes_read()
    got = fetch_item(item, tmp_path / "images", None, **limits)
    read = _bytes_read() - before

    assert got.original_path.read_bytes() == data and got.rgb.shape == (900, 1200, 3)
    assert len(data) <= read < 1.5 * len(data)  # one read of the photo (it was four)
