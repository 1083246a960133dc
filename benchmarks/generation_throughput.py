"""Batched vs one-at-a-time generation on a tiny config-built LLaVA: same prompts, items/s for both, and the ratio.

    python benchmarks/generation_throughput.py [--items 16] [--repeats 3] [--batch-size 8] [--threads 1]

The model is random and tiny (dama.tiny), so absolute numbers say little about a 7B model; the ratio shows what
left-padded batching buys over a loop of single generate() calls on this machine. Both runs must give identical
greedy answers (checked), so the speed-up costs nothing in output.
"""

from __future__ import annotations

import argparse
import time

import torch
from PIL import Image

from dama import tiny
from dama.eval.generate import Decoding, generate_responses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the best time of each counts")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--hidden-size", type=int, default=64, help="text model width of the tiny LLaVA")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (0: torch's default); see the note below"
    )
    args = parser.parse_args()
    # A model this small gains nothing from intra-op threads, and on a busy CPU their synchronisation made the
    # one-at-a-time timings erratic (up to 30x slower between runs); one thread gives stable numbers.
    if args.threads:
        torch.set_num_threads(args.threads)

    model, processor = tiny.build_llava(hidden_size=args.hidden_size, num_layers=2)
    model = model.to(args.device).eval()
    # min_new_tokens keeps every answer the same length, so both runs do the same amount of decoding work
    model.generation_config.min_new_tokens = args.max_new_tokens
    questions = ["Describe the image.", "What objects are in this picture?", "Is there a chair in the image?"]
    items = [
        {
            "question": questions[i % 3] + " Answer in detail." * (i % 4),
            "image": Image.new("RGB", (24, 24), (i * 7 % 256, 90, 30)),
        }
        for i in range(args.items)
    ]
    decoding = Decoding(num_beams=args.num_beams, max_new_tokens=args.max_new_tokens)
    generate_responses(model, processor, items[:2], batch_size=2, decoding=decoding)  # warm-up

    # Interleaved repeats, best time per mode: on a shared CPU, other processes only ever add time.
    modes = {"one-at-a-time": 1, f"batched (batch {args.batch_size})": args.batch_size}
    timings = {name: float("inf") for name in modes}
    answers = {}
    for _ in range(args.repeats):
        for name, batch_size in modes.items():
            start = time.perf_counter()
            answers[name] = generate_responses(model, processor, items, batch_size=batch_size, decoding=decoding)
            timings[name] = min(timings[name], time.perf_counter() - start)

    single, batched = timings.values()
    print(
        f"tiny LLaVA (text hidden {args.hidden_size}), {args.items} items, {args.max_new_tokens} new tokens, "
        f"beams {args.num_beams}, device {args.device}, torch threads {torch.get_num_threads()}, "
        f"best of {args.repeats}"
    )
    for name, seconds in timings.items():
        print(f"  {name:<22} {args.items / seconds:8.1f} items/s  ({seconds:.2f} s)")
    print(f"  speed-up: {single / batched:.2f}x")
    first, second = answers.values()
    same = sum(a == b for a, b in zip(first, second))
    print(f"  identical answers: {same}/{args.items}")


if __name__ == "__main__":
    main()
