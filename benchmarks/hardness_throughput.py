"""Throughput of `dama hardness` versus a naive loop (one CLIP forward per image–sentence pair), same model.

The model is a config-built CLIP of ViT-B/32 size (CLIPConfig defaults: 224 px, patch 32, 12+12 layers; random
weights, which cost the same as trained ones), on the CPU. The data are synthetic preference pairs with a distinct
JPEG image each (no image is shared, so nothing is gained from deduplication) and five sentences per response.
Every measurement runs in its own subprocess, so the reported peak RSS (the process's, plus its image-decoding
workers') belongs to that measurement alone. The pipeline runs as `dama hardness` does on a CPU (glibc allocator
tuned, `dama.hardness.allocator`); `--naive-tuned-malloc` also times the naive loop so tuned, to show that the
ratio does not come from the allocator alone. `--dtype` sets the precision of both sides.

    python benchmarks/hardness_throughput.py                       # 1k pairs, naive loop on 30 pairs
    python benchmarks/hardness_throughput.py --pairs 1000 10000    # also 10k
    python benchmarks/hardness_throughput.py --dtype bfloat16      # both sides in bfloat16 (fast with AMX)

It prints numbers; it is not a timed test.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SUBJECTS = ["cat", "dog", "bus", "person", "bird", "car", "umbrella", "pizza", "chair", "bicycle", "tree", "cup"]
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "brown", "orange"]
PLACES = [
    "on a wooden table",
    "in the green park",
    "near the street",
    "next to a window",
    "under a tree",
    "in the kitchen",
    "on the left side of the image",
    "in the background",
]


def sentence(rng) -> str:
    return (
        f"A {rng.choice(COLOURS)} {rng.choice(SUBJECTS)} is {rng.choice(PLACES)}, and a "
        f"{rng.choice(COLOURS)} {rng.choice(SUBJECTS)} can be seen {rng.choice(PLACES)}."
    )


def make_data(path: Path, n: int, sentences_per_response: int = 5, seed: int = 0) -> None:
    """`n` pairs in a parquet file, written in batches (the generator's memory does not grow with n)."""
    import random

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    writer = None
    for start in range(0, n, 500):
        rows = []
        for i in range(start, min(n, start + 500)):
            base = nrng.integers(0, 255, size=(1, 1, 3))
            pixels = np.clip(base + nrng.normal(0, 40, size=(240, 320, 3)), 0, 255).astype("uint8")
            buf = io.BytesIO()
            Image.fromarray(pixels).save(buf, format="JPEG", quality=80)
            rows.append(
                {
                    "idx": i,
                    "question": "Describe the image in detail.",
                    "chosen": " ".join(sentence(rng) for _ in range(sentences_per_response)),
                    "rejected": " ".join(sentence(rng) for _ in range(sentences_per_response)),
                    "image": {"bytes": buf.getvalue(), "path": None},
                }
            )
        table = pa.Table.from_pylist(rows)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def build_model(path: Path, size: str = "vit-b32") -> None:
    """Save a ViT-B/32-sized CLIP with random weights and an EOS-appending tokenizer (BPE on our sentences).

    `size="tiny"` saves `dama.tiny.build_clip()` instead: seconds per thousand pairs, to check memory at 10k+ pairs.
    """
    import random

    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    from dama.tiny import build_clip, build_image_processor, build_tokenizer, save_pretrained

    if size == "tiny":
        save_pretrained(*build_clip(), path)
        return
    rng = random.Random(1)
    tokenizer = build_tokenizer([sentence(rng) for _ in range(2000)], vocab_size=4096, add_eos=True)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={},  # defaults: ViT-B/32, 224 px
    )
    torch.manual_seed(0)
    model = CLIPModel(config)
    tokenizer.model_max_length = config.text_config.max_position_embeddings
    processor = CLIPProcessor(image_processor=build_image_processor(224), tokenizer=tokenizer)
    model.save_pretrained(path)
    processor.save_pretrained(path)


def peak_rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return (own + children) / 1024  # Linux reports KiB


def run_pipeline(data: Path, model: Path, out: Path, workers: int, dtype: str = "float32") -> dict:
    from dama.hardness.allocator import tune_glibc_malloc
    from dama.hardness.compute import compute_hardness
    from dama.hardness.scorers import DualEncoderScorer
    from dama.hardness.splitters import SentenceSplitter

    tune_glibc_malloc()  # as `dama hardness` does on a CPU
    scorer = DualEncoderScorer.from_pretrained(str(model), device="cpu", dtype=dtype)
    splitter = SentenceSplitter()
    start = time.perf_counter()
    meta = compute_hardness(
        data, out, scorer, splitter, workers=workers, shard_size=1000, progress=False, overwrite=True
    )
    seconds = time.perf_counter() - start
    return {
        "pairs": meta["n_rows"],
        "seconds": seconds,
        "pairs_per_s": meta["n_rows"] / seconds,
        "peak_rss_mib": peak_rss_mib(),
    }


def run_naive(data: Path, model_path: Path, pairs: int, tuned_malloc: bool = False, dtype: str = "float32") -> dict:
    """One full CLIP forward (image + one sentence) per image–sentence pair, the image decoded each time.

    `tuned_malloc`: with the allocator settings `dama hardness` uses, to show how much of the ratio they account for.
    """
    if tuned_malloc:
        from dama.hardness.allocator import tune_glibc_malloc

        tune_glibc_malloc()
    import pyarrow.parquet as pq
    import torch
    from transformers import AutoModel, AutoProcessor

    from dama.hardness.splitters import SentenceSplitter
    from dama.images import load_image

    torch_dtype = getattr(torch, dtype)
    model = AutoModel.from_pretrained(str(model_path)).to(torch_dtype).eval()
    processor = AutoProcessor.from_pretrained(str(model_path))
    splitter = SentenceSplitter()
    rows = pq.ParquetFile(data).read_row_group(0).slice(0, pairs).to_pylist()
    start = time.perf_counter()
    deltas = []
    with torch.inference_mode():
        for row in rows:
            subs_w, subs_l = splitter.split_text(row["chosen"]), splitter.split_text(row["rejected"])
            logits = []
            for text in subs_w + subs_l:
                image = load_image(row["image"])
                inputs = processor(text=[text], images=[image], return_tensors="pt", padding=True, truncation=True)
                inputs["pixel_values"] = inputs["pixel_values"].to(torch_dtype)
                logits.append(model(**inputs).logits_per_image[0, 0])
            p = torch.softmax(torch.stack(logits), 0)
            deltas.append(float(p[: len(subs_w)].sum() - p[len(subs_w) :].sum()))
    seconds = time.perf_counter() - start
    return {"pairs": len(rows), "seconds": seconds, "pairs_per_s": len(rows) / seconds, "peak_rss_mib": peak_rss_mib()}


def in_subprocess(kind: str, threads: int | None = None, **kwargs) -> dict:
    cmd = [sys.executable, __file__, "--_run", kind, "--_args", json.dumps({k: str(v) for k, v in kwargs.items()})]
    env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[1000], help="dataset sizes for the pipeline")
    parser.add_argument("--naive-pairs", type=int, default=30, help="pairs timed for the naive loop")
    parser.add_argument(
        "--model",
        choices=("vit-b32", "tiny"),
        default="vit-b32",
        help="vit-b32: the target configuration; tiny: dama.tiny's CLIP, for memory at large sizes",
    )
    parser.add_argument("--workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) - 1)))
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads in both measurements (default: "
        "torch's choice); 1 is the least sensitive to other load on a shared machine",
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16"),
        default="float32",
        help="precision of the model in both measurements (bfloat16 is fast on CPUs with AMX)",
    )
    parser.add_argument(
        "--naive-tuned-malloc",
        action="store_true",
        help="also time the naive loop with the glibc settings dama hardness uses on a CPU",
    )
    parser.add_argument("--workdir", default=None, help="keep data and outputs here (default: a temp folder)")
    parser.add_argument("--_run", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_args", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._run:
        kw = json.loads(args._args)
        if args._run == "naive":
            result = run_naive(
                Path(kw["data"]), Path(kw["model"]), int(kw["pairs"]), kw.get("tuned") == "True", kw["dtype"]
            )
        else:
            result = run_pipeline(
                Path(kw["data"]), Path(kw["model"]), Path(kw["out"]), int(kw["workers"]), kw["dtype"]
            )
        print(json.dumps(result))
        return

    import torch

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dama-hardness-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, "
        f"{args.threads or torch.get_num_threads()} threads; "
        f"image workers {args.workers}; model {args.model}, {args.dtype}; workdir {work}"
    )
    model = work / f"clip-{args.model}-random"
    if not (model / "config.json").exists():
        build_model(model, args.model)
    sizes = sorted(set(args.pairs))
    data = {}
    for n in sizes:
        data[n] = work / f"pairs-{n}.parquet"
        if not data[n].exists():
            make_data(data[n], n)
    n_naive = min(args.naive_pairs, sizes[0])
    naive = in_subprocess(
        "naive", threads=args.threads, data=data[sizes[0]], model=model, pairs=n_naive, dtype=args.dtype
    )
    print(f"load average now {os.getloadavg()[0]:.1f}")
    print(
        f"naive loop : {naive['pairs']} pairs in {naive['seconds']:.1f} s = {naive['pairs_per_s']:.3f} pairs/s, "
        f"peak RSS {naive['peak_rss_mib']:.0f} MiB"
    )
    if args.naive_tuned_malloc:
        tuned = in_subprocess(
            "naive",
            threads=args.threads,
            data=data[sizes[0]],
            model=model,
            pairs=n_naive,
            tuned=True,
            dtype=args.dtype,
        )
        print(
            f"naive loop, allocator tuned as dama hardness: {tuned['pairs_per_s']:.3f} pairs/s "
            f"({tuned['pairs_per_s'] / naive['pairs_per_s']:.2f}x the plain naive loop), "
            f"peak RSS {tuned['peak_rss_mib']:.0f} MiB"
        )
    for n in sizes:
        out = work / f"out-{args.model}-{args.dtype}-{n}"
        res = in_subprocess(
            "pipeline",
            threads=args.threads,
            data=data[n],
            model=model,
            out=out,
            workers=args.workers,
            dtype=args.dtype,
        )
        print(f"load average now {os.getloadavg()[0]:.1f}")
        print(
            f"pipeline   : {res['pairs']} pairs in {res['seconds']:.1f} s = {res['pairs_per_s']:.2f} pairs/s "
            f"({res['pairs_per_s'] / naive['pairs_per_s']:.1f}x naive), peak RSS {res['peak_rss_mib']:.0f} MiB "
            "(process + workers)"
        )


if __name__ == "__main__":
    main()
