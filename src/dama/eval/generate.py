"""Answer a benchmark's questions with any Hugging Face VLM: `dama eval generate`, and `generate_responses` for Python.

The model is loaded through `AutoModelForImageTextToText` + `AutoProcessor`; prompts go through the processor's
chat template (one image, then the question). Batches are left-padded so every row's continuation starts at the
same position. Decoding follows each benchmark's reference setup (`PRESETS`), overridable by flags.

Runs are resumable: the output `<out>/<bench>.jsonl` is appended one line per answer and flushed after each batch;
a rerun skips ids already there. A last line cut short by a crash is detected and removed before appending.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from dama.devices import DTYPES, resolve_device, resolve_dtype
from dama.errors import loading_model
from dama.eval.benchmark import Decoding
from dama.eval.records import RecordError, read_jsonl_lines
from dama.eval.registry import BENCHMARKS, generate_names
from dama.images import ImageError, is_base64_image, load_image, resolve_image_path
from dama.io import check_writable

# Reference decoding per benchmark (each benchmark's record in `dama.eval.registry` holds its own).
PRESETS: dict[str, Decoding] = {name: b.decoding for name, b in BENCHMARKS.items() if b.decoding is not None}


def read_questions(bench: str, path: str | Path) -> list[dict]:
    """Read a benchmark's question file into items, in file order. Images stay references until generation."""
    benchmark = BENCHMARKS.get(bench)
    if benchmark is None or benchmark.read_questions is None:
        raise RecordError(f"unknown benchmark {bench!r}; choose from {', '.join(generate_names())}")
    return benchmark.read_questions(Path(path))


def check_items(items: list[dict], image_root: str | Path | None) -> None:
    """Fail before any generation on duplicate ids or image files that are not there (not hours into a run)."""
    seen: dict[str, str] = {}
    for item in items:
        if item["id"] in seen:
            raise RecordError(f"{item['where']}: duplicate id {item['id']!r} (first at {seen[item['id']]})")
        seen[item["id"]] = item["where"]
        image = item["image"]
        if isinstance(image, str) and not is_base64_image(image):  # a path
            try:
                path = resolve_image_path(image, image_root) if image_root else Path(image)
            except ImageError as err:
                raise RecordError(f"{item['where']}: {err}") from err
            if not path.is_file():
                hint = "" if image_root else " (pass --image-root with the benchmark's image folder)"
                raise RecordError(f"{item['where']}: image file not found: {path}{hint}")


# --- generation -------------------------------------------------------------------------------------------------


def _prompt(processor, question: str) -> str:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def generate_responses(
    model, processor, items: list[dict], batch_size: int = 8, decoding: Decoding | dict | None = None, image_root=None
) -> list[str]:
    """Answers for `items` ({"question": str, "image": PIL image or any `load_image` value}), in input order.

    Left-padded batches of `batch_size`; greedy (or beam search if `decoding.num_beams > 1`); special tokens and
    surrounding whitespace stripped from the answers.
    """
    import torch

    decoding = Decoding(**decoding) if isinstance(decoding, dict) else (decoding or Decoding())
    if getattr(processor, "chat_template", None) is None:
        raise RecordError("the processor has no chat template; save one with the processor (chat_template.jinja)")
    tokenizer = processor.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    answers: list[str] = []
    old_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    try:
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            texts = [_prompt(processor, item["question"]) for item in batch]
            images = [
                load_image(item["image"], image_root, where=item.get("where", f"item {start + i}"))
                for i, item in enumerate(batch)
            ]
            inputs = processor(text=texts, images=images, return_tensors="pt", padding=True).to(device)
            if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
                inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            with torch.inference_mode():
                out = model.generate(
                    **inputs,
                    do_sample=False,
                    num_beams=decoding.num_beams,
                    max_new_tokens=decoding.max_new_tokens,
                    pad_token_id=pad_id,
                )
            # out: (B, prompt_len + new_len); left padding puts every continuation at prompt_len
            new_tokens = out[:, inputs["input_ids"].shape[1] :]
            answers += [text.strip() for text in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = old_side
    return answers


# --- the output file: resume and repair ----------------------------------------------------------------------------


def read_done(path: Path) -> dict[str, dict]:
    """Rows already written, by id. A crash can leave a last line without its newline: that line is cut off."""
    if not path.is_file():
        return {}
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1
        print(f"{path}: removing a truncated last line (an interrupted run); it will be regenerated", file=sys.stderr)
        with path.open("r+b") as handle:
            handle.truncate(keep)
    done: dict[str, dict] = {}
    try:
        rows = read_jsonl_lines(path)
    except RecordError as err:
        raise RecordError(f"{err}; the output file is damaged in the middle, not just at the end") from err
    for line, row in rows:
        if "id" not in row or "response" not in row:
            raise RecordError(f"{path}:{line}: not a response row (needs 'id' and 'response')")
        if str(row["id"]) in done:
            raise RecordError(f"{path}:{line}: duplicate id {row['id']!r} in the output file")
        done[str(row["id"])] = row
    return done


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="local folder (or hub name) of a VLM loadable by AutoModel")
    parser.add_argument(
        "--bench", required=True, choices=sorted(generate_names()), help="benchmark whose question file is read"
    )
    parser.add_argument("--questions", required=True, help="the benchmark's question file (see docs/eval-judges.md)")
    parser.add_argument("--out", required=True, help="output folder; answers go to <out>/<bench>.jsonl")
    parser.add_argument("--image-root", help="folder that relative image paths in the question file resolve under")
    parser.add_argument("--batch-size", type=int, default=8, help="questions per generate() call (left-padded)")
    parser.add_argument("--num-beams", type=int, help="override the benchmark preset (1 = greedy)")
    parser.add_argument("--max-new-tokens", type=int, help="override the benchmark preset")
    parser.add_argument("--limit", type=int, help="answer only the first N questions of the file")
    parser.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), or a torch device")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPES,
        help="auto: float32 on CPU, bfloat16 on a GPU that supports it, else float16 (dama.devices)",
    )
    parser.add_argument("--model-name", help="name recorded in each row's 'model' field (default: --model)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm
    from transformers import AutoModelForImageTextToText, AutoProcessor

    decoding = BENCHMARKS[args.bench].decoding
    if args.num_beams is not None:
        decoding = replace(decoding, num_beams=args.num_beams)
    if args.max_new_tokens is not None:
        decoding = replace(decoding, max_new_tokens=args.max_new_tokens)
    if args.batch_size < 1 or decoding.num_beams < 1 or decoding.max_new_tokens < 1:
        raise RecordError("--batch-size, --num-beams and --max-new-tokens must be at least 1")
    all_items = read_questions(args.bench, args.questions)
    items = all_items if args.limit is None else all_items[: args.limit]
    check_items(items, args.image_root)

    out_path = Path(args.out) / f"{args.bench}.jsonl"
    check_writable(args.out, "--out")  # before the model is loaded and anything is generated
    model_name = args.model_name or str(args.model)
    done = read_done(out_path)
    known = {item["id"] for item in all_items}
    foreign = [qid for qid in done if qid not in known]
    if foreign:
        # legitimate for AMBER, whose generative and yes/no query files may be answered into one amber.jsonl
        print(
            f"{out_path}: {len(foreign)} answered id(s) are not in {args.questions} (first: {foreign[0]!r}); kept",
            file=sys.stderr,
        )
    for qid, row in done.items():
        if row.get("model") != model_name or row.get("decoding") != decoding.to_record():
            raise RecordError(
                f"{out_path}: id {qid!r} was generated by model {row.get('model')!r} with decoding "
                f"{row.get('decoding')}, not {model_name!r} with {decoding.to_record()}; use another --out "
                "so answers from different settings are not mixed"
            )
    pending = [item for item in items if item["id"] not in done]
    print(f"{args.bench}: {len(items)} questions, {len(items) - len(pending)} already answered in {out_path}")
    if not pending:
        return 0

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    with loading_model(str(args.model), "--model"):  # not found: one line saying how to point at a folder
        model = AutoModelForImageTextToText.from_pretrained(args.model, dtype=dtype).to(device).eval()
        processor = AutoProcessor.from_pretrained(args.model)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        out_path.open("a", encoding="utf-8") as handle,
        tqdm(total=len(pending), desc=f"generating {args.bench}") as bar,
    ):
        for start in range(0, len(pending), args.batch_size):
            batch = pending[start : start + args.batch_size]
            answers = generate_responses(model, processor, batch, args.batch_size, decoding, args.image_root)
            for item, answer in zip(batch, answers):
                row = {"id": item["id"], "question": item["question"], "response": answer}
                if "image_id" in item:
                    row["image_id"] = item["image_id"]
                row.update(bench=args.bench, model=model_name, decoding=decoding.to_record())
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            bar.update(len(batch))
    print(f"{args.bench}: wrote {len(pending)} answers to {out_path}")
    return 0
