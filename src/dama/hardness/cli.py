"""`dama hardness`: split responses, CLIP-score sub-sentences, write the per-pair hardness δ and δ̄ (docs/paper_mapping.md §2).

    dama hardness --data rlaif-v.parquet --clip openai/clip-vit-large-patch14-336 --out data/rlaif-v-hardness
    dama hardness --data dama_official.json --official --out data/official-hardness

Interrupt it at any time and run the same command again: it resumes. See docs/hardness.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dama.delta import OFFICIAL_DELTA_MEAN
from dama.errors import DamaError, exit_code_of, is_user_error, positive_int, require_finite
from dama.hardness.scorers import SCORERS
from dama.hardness.splitters import SPLITTERS
from dama.io import check_writable

DEFAULT_CLIP = "openai/clip-vit-large-patch14-336"


class HardnessRunError(DamaError):
    """A `dama hardness` run stopped on a user error; the message says what happened to the output folder."""


def delta_mean_arg(text: str) -> float | str:
    """argparse type of --delta-mean: 'computed' or a finite number (NaN or inf would make every β NaN)."""
    if text == "computed":
        return text
    try:
        return require_finite(text, "--delta-mean")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number or 'computed', got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dama hardness",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    io = p.add_argument_group("input and output")
    io.add_argument("--data", required=True, help="parquet file/folder, .jsonl, .json list, or a datasets folder")
    io.add_argument("--out", required=True, help="output folder (data/shard-*.parquet, hardness.json, summary.md)")
    io.add_argument("--split", default=None, help="split of a DatasetDict folder (default: train)")
    io.add_argument("--image-root", default=None, help="folder that relative image paths are resolved under")
    io.add_argument(
        "--on-error",
        choices=("fail", "skip"),
        default="fail",
        help="bad row (unreadable/missing image, empty response, no sentence): stop, or leave it out",
    )
    io.add_argument(
        "--shard-size", type=positive_int, default=1000, help="rows per output shard (the unit of resumption)"
    )
    io.add_argument("--limit", type=positive_int, default=None, help="process only the first N rows")
    io.add_argument("--overwrite", action="store_true", help="discard an existing output in --out and start again")
    io.add_argument("--no-progress", action="store_true", help="no progress bar")
    io.add_argument(
        "--delta-mean",
        default=None,
        type=delta_mean_arg,
        help="δ̄ to store instead of the computed mean; with --official the default is the official "
        f"{OFFICIAL_DELTA_MEAN}, and 'computed' stores the mean of the imported δ",
    )
    io.add_argument(
        "--official",
        action="store_true",
        help="import the official DAMA JSON (chosen_logits/rejected_logits): δ = Σchosen − Σrejected",
    )
    sc = p.add_argument_group("scoring (docs/paper_mapping.md §2 step 2)")
    sc.add_argument(
        "--clip",
        default=DEFAULT_CLIP,
        help="dual encoder (CLIP/SigLIP): folder, hub name in the cache, or tiny:clip (offline test model)",
    )
    sc.add_argument("--scorer", choices=SCORERS, default="union_softmax")
    sc.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    sc.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "float16", "bfloat16"),
        help="auto: float32 on CPU, bfloat16 on a GPU that supports it, else float16 (dama.devices)",
    )
    sc.add_argument("--text-batch-size", type=positive_int, default=256)
    sc.add_argument("--image-batch-size", type=positive_int, default=32)
    sc.add_argument("--workers", type=int, default=None, help="image-decoding processes (default: cores − 1, ≤ 8)")
    sp = p.add_argument_group("splitting (docs/paper_mapping.md §2 step 1)")
    sp.add_argument("--splitter", choices=SPLITTERS, default="sentence")
    sp.add_argument("--min-words", type=int, default=3, help="sentence splitter: shorter fragments are merged")
    sp.add_argument("--language", default="english", help="sentence splitter: Punkt model")
    sp.add_argument(
        "--subsentence-columns",
        default="chosen_subsentences,rejected_subsentences",
        help="column splitter: CHOSEN,REJECTED list-of-string columns",
    )
    sp.add_argument(
        "--llm-model",
        default=None,
        help="llm splitter: local causal LM folder/name, or the endpoint's model name with --llm-endpoint",
    )
    sp.add_argument("--llm-endpoint", default=None, help="llm splitter: OpenAI-compatible base URL (…/v1)")
    sp.add_argument("--llm-api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    sp.add_argument("--llm-batch-size", type=int, default=8)
    sp.add_argument("--llm-max-new-tokens", type=int, default=256)
    sp.add_argument("--llm-concurrency", type=int, default=4, help="endpoint requests in flight")
    sp.add_argument("--llm-retries", type=int, default=3, help="endpoint retries on 429/5xx/network errors")
    sp.add_argument("--llm-cache", default=None, help="SQLite cache of generations (default: OUT/.llm_cache.sqlite)")
    return p


def build_splitter(args: argparse.Namespace):
    from dama.hardness import splitters

    if args.splitter == "sentence":
        return splitters.SentenceSplitter(language=args.language, min_words=args.min_words)
    if args.splitter == "column":
        names = [c.strip() for c in args.subsentence_columns.split(",")]
        if len(names) != 2:
            raise HardnessRunError(
                f"--subsentence-columns needs two names CHOSEN,REJECTED, got {args.subsentence_columns!r}"
            )
        return splitters.ColumnSplitter(*names)
    from dama.llm import ChatEndpoint, LocalLM, SqliteReplyCache

    if not args.llm_model:
        raise HardnessRunError("--splitter llm needs --llm-model (a local model, or the endpoint's model name)")
    if args.llm_endpoint:
        generator = ChatEndpoint(
            args.llm_endpoint,
            args.llm_model,
            api_key_env=args.llm_api_key_env,
            max_tokens=args.llm_max_new_tokens,
            concurrency=args.llm_concurrency,
            retries=args.llm_retries,
        )
    else:
        generator = LocalLM.from_pretrained(
            args.llm_model,
            device=args.device,
            dtype=args.dtype,
            max_new_tokens=args.llm_max_new_tokens,
            what="--llm-model",
        )
    cache = SqliteReplyCache(args.llm_cache or Path(args.out) / ".llm_cache.sqlite")
    return splitters.LLMSplitter(generator, cache, batch_size=args.llm_batch_size)


def _default_workers() -> int:
    import os

    return max(0, min(8, (os.cpu_count() or 1) - 1))


def run(args: argparse.Namespace) -> dict:
    if args.official:
        from dama.hardness.compute import import_official

        return import_official(
            args.data,
            args.out,
            delta_mean=args.delta_mean,  # None: the official constant (dama.delta.official_delta_mean)
            on_error=args.on_error,
            shard_size=args.shard_size,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    from dama.hardness.compute import compute_hardness
    from dama.hardness.scorers import DualEncoderScorer

    delta = None if args.delta_mean in (None, "computed") else args.delta_mean
    splitter = build_splitter(args)
    scorer = DualEncoderScorer.from_pretrained(args.clip, device=args.device, dtype=args.dtype)
    if scorer.device.type == "cpu":  # this process only runs the job: keep freed activations for reuse
        from dama.hardness.allocator import tune_glibc_malloc

        tune_glibc_malloc()
    workers = _default_workers() if args.workers is None else args.workers
    return compute_hardness(
        args.data,
        args.out,
        scorer,
        splitter,
        scoring=args.scorer,
        image_root=args.image_root,
        split=args.split,
        on_error=args.on_error,
        shard_size=args.shard_size,
        text_batch_size=args.text_batch_size,
        image_batch_size=args.image_batch_size,
        workers=workers,
        limit=args.limit,
        delta_mean=delta,
        overwrite=args.overwrite,
        progress=not args.no_progress,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_writable(args.out, "--out")
    try:
        meta = run(args)
    except (DamaError, OSError) as err:
        if not is_user_error(err):
            raise
        out = Path(args.out)
        started = out.is_dir() and not (out / "hardness.json").is_file()
        note = f" (the output in {args.out} is incomplete; hardness.json is not written)" if started else ""
        stopped = HardnessRunError(f"{err}{note}")
        stopped.exit_code = exit_code_of(err)  # e.g. 4 when the LLM splitter's endpoint could not answer
        raise stopped from err
    print(
        f"dama hardness: wrote {meta['n_rows']} pairs ({meta['n_skipped']} skipped) to {args.out}; "
        f"δ̄ = {meta['delta_mean']} ({meta['delta_mean_source']}); see {Path(args.out) / 'summary.md'}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    from dama.cli import main as dama_main

    sys.exit(dama_main(["hardness", *sys.argv[1:]]))
