"""Row builders of the hardness tests (small preference pairs with embedded PNG images), imported by name.

Kept out of conftest.py on purpose: see the note there.
"""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image


def png_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (20, 18)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def make_rows(n: int, start: int = 0) -> list[dict]:
    """`n` pairs with distinct embedded images and two sentences per response (some images repeat)."""
    rows = []
    for i in range(start, start + n):
        rows.append(
            {
                "idx": i,
                "question": "Describe the image.",
                "chosen": f"A red cat sits on a table. There are {i % 5} dogs in the park.",
                "rejected": f"A blue bus is parked near a tree. A person holds {i % 3} umbrellas.",
                "image": {
                    "bytes": png_bytes(((i * 37) % 256, (i * 11) % 256, 90)) if i % 4 else png_bytes((1, 2, 3)),
                    "path": None,
                },
            }
        )
    return rows


def write_parquet(path: Path, rows: list[dict]) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path
