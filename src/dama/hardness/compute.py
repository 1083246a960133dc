"""Library entry points: `compute_hardness` (split → CLIP-score → δ, docs/paper_mapping.md §2) and `import_official`.

Both write the resumable output folder described in `dama.hardness.output`; `dama hardness` is a thin CLI on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dama.delta import official_delta_mean
from dama.hardness.decode import ImageDecoder
from dama.hardness.official_import import OfficialShardProcessor
from dama.hardness.pipeline import run_shards
from dama.hardness.reader import open_input
from dama.hardness.scorers import DualEncoderScorer
from dama.hardness.shard import ClipShardProcessor
from dama.hardness.splitters import Splitter

ON_ERROR = ("fail", "skip")


def compute_hardness(
    data: str | Path,
    out: str | Path,
    scorer: DualEncoderScorer,
    splitter: Splitter,
    *,
    scoring: str = "union_softmax",
    image_root: str | Path | None = None,
    split: str | None = None,
    on_error: str = "fail",
    shard_size: int = 1000,
    text_batch_size: int = 256,
    image_batch_size: int = 32,
    workers: int = 0,
    limit: int | None = None,
    delta_mean: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
    after_shard=None,
) -> dict[str, Any]:
    """Write the hardness columns and δ̄ of `data` to the folder `out`; resumes an interrupted run of the same settings.

    Args:
        scorer: the dual encoder (`DualEncoderScorer.from_pretrained(...)`, or wrapping a model built in memory).
        splitter: a `SentenceSplitter`, `LLMSplitter` or `ColumnSplitter`.
        scoring: `union_softmax` (Eq. 3–5, default) or `mean_cosine`.
        workers: image-decoding processes (0: decode in this process).
        delta_mean: store this δ̄ instead of the computed mean (docs/paper_mapping.md §2 step 4).

    Returns:
        The metadata written to `out/hardness.json`.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    source = open_input(data, split=split)
    if scorer.image_processor is None:
        raise TypeError(f"{scorer.name}: the processor has no image processor")
    window = max(2 * image_batch_size, 8)
    with ImageDecoder(scorer.image_processor, image_root=image_root, workers=workers, window=window) as decoder:
        processor = ClipShardProcessor(
            scorer,
            splitter,
            decoder,
            scoring=scoring,
            on_error=on_error,
            text_batch_size=text_batch_size,
            image_batch_size=image_batch_size,
            source_name=str(source.path),
        )
        return run_shards(
            source,
            out,
            processor,
            shard_size=shard_size,
            limit=limit,
            delta_mean=delta_mean,
            delta_mean_source="override" if delta_mean is not None else "computed",
            overwrite=overwrite,
            progress=progress,
            after_shard=after_shard,
            extra_run={"image_root": str(Path(image_root).resolve()) if image_root else None, "on_error": on_error},
        )


def import_official(
    data: str | Path,
    out: str | Path,
    *,
    delta_mean: float | str | None = None,
    on_error: str = "fail",
    shard_size: int = 1000,
    overwrite: bool = False,
    progress: bool = True,
    after_shard=None,
) -> dict[str, Any]:
    """Import the official DAMA JSON: δ = Σ chosen_logits − Σ rejected_logits; δ̄ the official constant by default.

    `delta_mean=None` stores the official constant, `"computed"` the mean of the imported δ, a float that value
    (`dama.delta.official_delta_mean`).
    """
    source = open_input(data)
    value, why = official_delta_mean(delta_mean)
    processor = OfficialShardProcessor(on_error=on_error, source_name=str(source.path))
    return run_shards(
        source,
        out,
        processor,
        shard_size=shard_size,
        delta_mean=value,
        delta_mean_source=why,
        overwrite=overwrite,
        progress=progress,
        after_shard=after_shard,
        extra_run={"on_error": on_error},
    )
