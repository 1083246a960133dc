"""The data-aware side of DAMA (docs/paper_mapping.md §2): per-pair hardness δ from CLIP scores of sub-sentences, and δ̄.

Files, one concept each:
    reader.py    streaming the input (parquet, JSONL, JSON list, datasets folder) in fixed-size chunks
    splitters.py sentence / llm / column splitters behind one interface (the llm one's clients and cache:
                 `dama.llm`, shared with the judges of `dama eval`)
    scorers.py   union_softmax / mean_cosine (pure maths) and the dual-encoder wrapper
    decode.py    image decoding in worker processes, ordered and bounded
    shard.py     the hardness columns of one shard
    pipeline.py  the resumable run over shards, and finalisation
    output.py    the output folder: atomic writes, summary, histogram, `read_hardness_output`
    official.py  importing the official DAMA JSON
    compute.py   library entry points; cli.py the `dama hardness` command

Only `read_hardness_output` is imported eagerly (it needs pyarrow alone); the rest loads on use.
"""

from __future__ import annotations

from dama.delta import HARDNESS_COLUMN as DELTA_COLUMN  # the one name of the δ column, under its hardness alias
from dama.hardness.output import NEW_COLUMNS, IncompleteOutputError, read_hardness_output, read_metadata

__all__ = ["DELTA_COLUMN", "NEW_COLUMNS", "IncompleteOutputError", "read_hardness_output", "read_metadata"]
