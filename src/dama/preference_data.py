"""Preference data for `dama train`: the formats we read, their conversion to TRL's format, and validation.

Formats (docs/paper_mapping.md §2, §7):
- `trl`: TRL's preference format, `prompt`/`chosen`/`rejected` (plain strings or conversational message lists) plus
  `image` or `images`.
- `rlaif-v`: RLAIF-V (`openbmb/RLAIF-V-Dataset`): `question`, `chosen`, `rejected`, `image` ({bytes, path} or a path),
  parquet files or a `datasets` folder.
- `official`: the official DAMA JSON: `question`, `chosen`, `rejected`, `image_path` (under `image_root`),
  `chosen_logits`/`rejected_logits` (per-sub-sentence CLIP scores, JSON strings such as `"[0.41, 0.22]"` as released,
  or lists; δ = Σ chosen − Σ rejected, parsed by `dama.official_release.official_delta`) and `logps`.
  The official `logps` come from another preprocessing, so they are not used as reference log-probs (h_i would not be
  0 at step 0); use `precompute_ref_log_probs: true`, which recomputes them with ours.
- A `dama hardness` output folder (has `hardness.json`): its rows plus the stored δ̄.

Every row is validated before training starts; all problems are reported together, each naming the file, the row
and the field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, concatenate_datasets, load_from_disk
from datasets import Image as ImageFeature

from dama.conversation import TRAINING_TEXTS
from dama.delta import HARDNESS_COLUMN, official_delta_mean
from dama.errors import DamaError, NonFiniteError, require_finite
from dama.hardness.output import read_hardness_output
from dama.images import ImageError, load_image, resolve_image_path
from dama.jsonl import first_type_change, iter_jsonl
from dama.official_release import LOGIT_FIELDS, official_delta, official_scores
from dama.row_fields import id_field, image_field, prompt_text, response_text, row_where

FORMATS = ("auto", "trl", "rlaif-v", "official")
MAX_REPORTED_ERRORS = 20
DATA_META = "dama_data.json"  # metadata (δ̄) stored next to a `datasets` folder by `dama precompute-ref`


class DataValidationError(DamaError, ValueError):
    """Raised with every problem found in a dataset, one per line (file, row, field, what to do)."""


@dataclass
class DataArguments:
    """Where the preference data comes from (`dama train` recipe keys)."""

    dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Training data: a .parquet/.json/.jsonl file, a folder of parquet shards, a `datasets` folder "
            "(save_to_disk) or a `dama hardness` output folder."
        },
    )
    dataset_format: str = field(
        default="auto",
        metadata={"help": "Input format; 'auto' detects it from the columns.", "choices": list(FORMATS)},
    )
    image_root: str | None = field(
        default=None,
        metadata={"help": "Folder that relative image paths are resolved under (paths escaping it fail)."},
    )
    eval_dataset_path: str | None = field(default=None, metadata={"help": "Optional evaluation data, same formats."})
    max_samples: int | None = field(default=None, metadata={"help": "Use only the first N pairs (debugging)."})
    validate_images: bool = field(
        default=True, metadata={"help": "Open every image before training to fail early on unreadable files."}
    )
    training_text: str = field(
        default="chat_template",
        metadata={
            "help": f"Text a pair is trained on, one of {TRAINING_TEXTS}: 'chat_template' (the processor's chat "
            "template, TRL's default) or 'vicuna_v1' (LLaVA-1.5's own conversation, as the official DAMA run: "
            "'<s>{system} USER: <image>\\n{question} ASSISTANT: {answer}</s>' with </s> inside the summed log-prob).",
            "choices": list(TRAINING_TEXTS),
        },
    )

    def __post_init__(self) -> None:
        if self.dataset_format not in FORMATS:
            raise DataValidationError(f"dataset_format must be one of {FORMATS}, got {self.dataset_format!r}")
        if self.training_text not in TRAINING_TEXTS:
            raise DataValidationError(f"training_text must be one of {TRAINING_TEXTS}, got {self.training_text!r}")


def _read_raw(path: Path) -> tuple[Dataset, float | None]:
    """Read a file or folder into a `Dataset`; returns δ̄ when the folder is a `dama hardness` output."""
    if path.is_dir():
        if (path / "hardness.json").is_file():
            data, delta_mean = read_hardness_output(path)
            return (data if isinstance(data, Dataset) else Dataset(data)), delta_mean
        if (path / "dataset_info.json").is_file() or (path / "state.json").is_file():
            try:
                dataset = load_from_disk(str(path))
            except (pa.ArrowException, OSError, ValueError, KeyError) as err:
                raise DataValidationError(
                    f"{path}: the `datasets` folder is damaged or incomplete ({type(err).__name__}: {err}); write it "
                    "again (e.g. rerun `dama precompute-ref`)"
                ) from err
            return dataset, _stored_delta_mean(path / DATA_META)
        shards = sorted(path.rglob("*.parquet"))
        if shards:
            return concatenate_datasets([_read_parquet(s) for s in shards]), None
        raise DataValidationError(f"{path}: folder holds no parquet shards, `datasets` folder or hardness output")
    if not path.is_file():
        raise DataValidationError(f"dataset_path {str(path)!r}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _read_parquet(path), None
    if suffix == ".jsonl":
        numbered = list(iter_jsonl(path, DataValidationError))
        return _from_records([row for _, row in numbered], path, [number for number, _ in numbered]), None
    if suffix == ".json":
        try:
            records = json.loads(path.read_text(encoding="utf-8-sig"))  # a byte-order mark is tolerated
        except UnicodeDecodeError as err:
            raise DataValidationError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason})") from err
        except json.JSONDecodeError as err:
            raise DataValidationError(f"{path}: invalid JSON at line {err.lineno} ({err.msg})") from err
        if isinstance(records, dict) and "data" in records:
            records = records["data"]
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise DataValidationError(f"{path}: expected a JSON list of records (objects)")
        return _from_records(records, path), None
    raise DataValidationError(f"{path}: unsupported file type {suffix!r} (use .parquet, .json, .jsonl or a folder)")


def _read_parquet(path: Path) -> Dataset:
    try:
        return Dataset.from_parquet(str(path))
    except (pa.ArrowException, OSError) as err:
        raise DataValidationError(f"{path}: not a readable parquet file ({type(err).__name__}: {err})") from err


def _from_records(records: list[dict], path: Path, lines: list[int] | None = None) -> Dataset:
    """A `Dataset` of JSON records; a field whose type changes between rows is named (file, line/row, field)."""
    try:
        return Dataset.from_list(records)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as err:
        where = first_type_change(records, lines=lines)
        if where is None:
            raise DataValidationError(f"{path}: the records cannot form a table ({err})") from err
        raise DataValidationError(
            f"{path} {where}. Every row must give a field the same type: text for prompt/chosen/rejected, a path "
            "or image bytes for an image, a list of numbers (or its JSON text) for chosen_logits/rejected_logits"
        ) from err


def _stored_delta_mean(meta: Path) -> float | None:
    """δ̄ stored next to a `datasets` folder by `dama precompute-ref`; it must be a finite number (or absent)."""
    if not meta.is_file():
        return None
    try:
        stored = json.loads(meta.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataValidationError(
            f"{meta} is damaged ({err}); run `dama precompute-ref` again to rewrite the folder"
        ) from err
    value = stored.get("delta_mean") if isinstance(stored, dict) else None
    return None if value is None else require_finite(value, f"{meta}: field 'delta_mean' (δ̄)")


def detect_format(columns: list[str], source: str = "the data") -> str:
    if "image_path" in columns and "chosen_logits" in columns:
        return "official"
    if "prompt" in columns:
        return "trl"
    if "question" in columns:
        return "rlaif-v"
    raise DataValidationError(
        f"{source}: cannot tell the data format from the columns {columns}: expected `prompt`/`chosen`/`rejected` "
        "(TRL), `question`/`chosen`/`rejected`/`image` (RLAIF-V) or the official DAMA JSON (`image_path`, "
        "`chosen_logits`)"
    )


REQUIRED = {
    "trl": ("prompt", "chosen", "rejected"),
    "rlaif-v": ("question", "chosen", "rejected", "image"),
    "official": ("question", "chosen", "rejected", "image_path", "chosen_logits", "rejected_logits"),
}


def _to_trl(dataset: Dataset, fmt: str, source: str, hardness_column: str = HARDNESS_COLUMN) -> Dataset:
    """Convert RLAIF-V / official rows to TRL's conversational vision format (and δ, as `hardness_column`, for official
    data)."""
    if fmt == "trl":
        return dataset

    id_key = id_field(dataset.column_names)

    def convert(row: dict[str, Any], index: int) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt": [{"role": "user", "content": row["question"]}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}],
        }
        if fmt == "official":
            out["image"] = row["image_path"]
            # the one parser of the official encoding (JSON strings or lists); raises naming row and field
            where = row_where(source, index, row, id_key)
            out[hardness_column] = official_delta(row["chosen_logits"], row["rejected_logits"], where)
        return out

    removed = [c for c in ("question", "chosen", "rejected", "image_path", "logps") if c in dataset.column_names]
    return dataset.map(convert, with_indices=True, remove_columns=removed, desc=f"Converting {source}")


def _text_problems(row: dict, where: str, numbers: tuple[str, ...], needs_prompt: bool) -> list[str]:
    """A row's problems with its texts and numeric columns (`numbers`: δ, stored reference log-probs)."""
    problems = []
    chosen, rejected = response_text(row["chosen"]), response_text(row["rejected"])
    if not chosen:
        problems.append(f"{where}: field 'chosen' is empty")
    if not rejected:
        problems.append(f"{where}: field 'rejected' is empty")
    if chosen and chosen == rejected:
        problems.append(f"{where}: fields 'chosen' and 'rejected' are identical — the pair carries no preference")
    if needs_prompt and not prompt_text(row["prompt"]):
        problems.append(f"{where}: field 'prompt' is empty")
    for name in numbers:
        value = row[name]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not math.isfinite(value):
            problems.append(f"{where}: field {name!r} is not a finite number ({value!r})")
    return problems


def _image_problems(
    value: Any, where: str, image_key: str, image_root: str | None, check_images: bool, require_images: str | None
) -> list[str]:
    """A row's problems with its image field (undecoded: a path, bytes, {bytes, path}, or a list of them)."""
    if require_images and not (value if image_key == "images" else value is not None):
        return [f"{where}: field {image_key!r} is empty: {require_images}=True needs an image in every pair"]
    if not check_images:
        return []
    problems = []
    for item in (value if image_key == "images" else [value]) or [None]:
        try:
            if isinstance(item, dict) and not item.get("bytes") and item.get("path"):
                item = item["path"]
            if isinstance(item, str) and image_root is not None:
                resolve_image_path(item, image_root)
            load_image(item, image_root, where=f"{where}: field {image_key!r}")
        except ImageError as err:
            message = str(err)
            problems.append(message if message.startswith(where) else f"{where}: field {image_key!r}: {message}")
    return problems


def validate(
    dataset: Dataset,
    source: str,
    image_root: str | None = None,
    hardness_column: str | None = None,
    check_images: bool = True,
    require_images: str | None = None,
) -> None:
    """Check every row; raise `DataValidationError` listing each problem as "<source> row i (id): field 'x': ...".

    `require_images` names the setting that needs an image in every row (`"mdpo"`): a dataset without an image
    column, or a row without an image, is then refused even when `check_images` is off.
    """
    errors: list[str] = []
    columns = dataset.column_names
    image_key = image_field(columns)
    if require_images and image_key is None:
        raise DataValidationError(
            f"{source}: {require_images}=True needs an image in every pair, but the data has no 'image' or 'images' "
            f"column (it has {columns})"
        )
    missing = [c for c in ("prompt", "chosen", "rejected") if c not in columns]
    if missing:
        raise DataValidationError(f"{source}: missing columns {missing} (has {columns})")
    if hardness_column is not None and hardness_column not in columns:
        raise DataValidationError(
            f"{source}: data_aware=True needs the hardness column {hardness_column!r}. Produce it with "
            f"`dama hardness --data {source} --clip <CLIP model> --out <dir>` and train on <dir>, or set "
            "data_aware=False."
        )
    id_key = id_field(columns)
    ref_columns = tuple(c for c in ("ref_chosen_logps", "ref_rejected_logps") if c in columns)
    # Decode nothing while scanning: images are checked one by one below, from their raw values.
    raw = dataset
    if image_key == "image":
        try:
            raw = dataset.cast_column(image_key, ImageFeature(decode=False))
        except (pa.ArrowException, TypeError, ValueError) as err:  # the whole column has a non-image type
            first = dataset[0]
            where = row_where(source, 0, first, id_key, label="id")
            raise DataValidationError(
                f"{where}: field 'image': expected an image (a path, bytes or {{bytes, path}}), got "
                f"{type(first[image_key]).__name__} {first[image_key]!r:.60}"
            ) from err
    numbers = ((hardness_column,) if hardness_column is not None else ()) + ref_columns
    for i, row in enumerate(raw):
        where = row_where(source, i, row, id_key, label="id")
        errors += _text_problems(row, where, numbers, needs_prompt=image_key is None)
        if image_key is not None:
            errors += _image_problems(row[image_key], where, image_key, image_root, check_images, require_images)
        if len(errors) >= MAX_REPORTED_ERRORS:
            errors.append("… stopping after the first problems; fix these and run again")
            break
    if errors:
        raise DataValidationError(f"{len(errors)} problem(s) in {source}:\n  " + "\n  ".join(errors))


def check_plain_prompts(dataset: Dataset, source: str, image_token: str | None) -> None:
    """Plain-text prompts of vision data must carry one `image_token` per image (the processor's placeholder).

    Conversational prompts get the placeholder from the chat template; a plain string is passed to the processor as
    it is, which fails deep inside training (or, with a wrong count, misaligns image and text). Checked before the
    model trains, naming the row.
    """
    columns = dataset.column_names
    image_key = image_field(columns)
    if image_key is None or not image_token:
        return
    prompts = dataset["prompt"]
    if not any(isinstance(prompt, str) for prompt in prompts):
        return
    errors: list[str] = []
    id_key = id_field(columns)
    if image_key == "images":  # counted from the Arrow list lengths: no image is decoded
        counts = pc.fill_null(pc.list_value_length(dataset.data.column("images")), 0).to_pylist()
    else:
        counts = [1] * len(prompts)
    for i, (prompt, n_images) in enumerate(zip(prompts, counts)):
        if not isinstance(prompt, str):
            continue
        found = prompt.count(image_token)
        if found != n_images:
            where = row_where(source, i, dataset[i] if id_key else {}, id_key, label="id")
            errors.append(
                f"{where}: field 'prompt' is plain text with {found} {image_token!r} placeholder(s) for {n_images} "
                'image(s); use the conversational format ([{"role": "user", "content": ...}]) so the chat '
                "template inserts it, or add the placeholder"
            )
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
    if errors:
        raise DataValidationError(f"{len(errors)} problem(s) in {source}:\n  " + "\n  ".join(errors))


def _resolve_images(dataset: Dataset, image_root: str | None, source: str) -> Dataset:
    """Make path-valued images absolute (under `image_root`) and decode lazily through the `Image` feature."""
    if "image" not in dataset.column_names:
        return dataset
    feature = dataset.features["image"]
    if isinstance(feature, ImageFeature):
        if image_root is None:
            return dataset
        raw = dataset.cast_column("image", ImageFeature(decode=False))

        def absolute(row: dict[str, Any]) -> dict[str, Any]:
            value = row["image"]
            if value and not value.get("bytes") and value.get("path"):
                value = {"bytes": None, "path": str(resolve_image_path(value["path"], image_root))}
            return {"image": value}

        return raw.map(absolute, desc=f"Resolving image paths of {source}").cast_column("image", ImageFeature())

    def to_path(row: dict[str, Any]) -> dict[str, Any]:
        value = row["image"]
        if isinstance(value, str):
            path = resolve_image_path(value, image_root) if image_root is not None else Path(value)
            return {"image": {"bytes": None, "path": str(path)}}
        if isinstance(value, dict):
            if not value.get("bytes") and value.get("path") and image_root is not None:
                value = {"bytes": None, "path": str(resolve_image_path(value["path"], image_root))}
            return {"image": value}
        return {"image": value}

    return dataset.map(to_path, desc=f"Resolving image paths of {source}").cast_column("image", ImageFeature())


def load_preference_dataset(
    path: str | Path,
    dataset_format: str = "auto",
    image_root: str | None = None,
    hardness_column: str | None = None,
    max_samples: int | None = None,
    check_images: bool = True,
    require_images: str | None = None,
) -> tuple[Dataset, float | None]:
    """Read, convert to TRL's format, validate. Returns the dataset and the stored δ̄ (hardness output, official data).

    `hardness_column` is required to be present and finite when given (pass it when `data_aware=True`). The δ this
    import produces (official data; a `dama hardness` output) is stored under that name (default
    `dama.row_fields.HARDNESS_COLUMN`). `require_images` (a setting's name, e.g. `"mdpo"`) refuses pairs without an image.
    """
    path = Path(path)
    source = str(path)
    column = hardness_column or HARDNESS_COLUMN
    dataset, delta_mean = _read_raw(path)
    names = dataset.column_names
    if (path / "hardness.json").is_file() and HARDNESS_COLUMN in names and column not in names:
        dataset = dataset.rename_column(HARDNESS_COLUMN, column)  # a hardness output's δ, under the asked name
    if len(dataset) == 0:  # an empty file has no columns either: say what is wrong, not which format is unknown
        raise DataValidationError(
            f"{source}: holds no rows; give dataset_path a file or folder with preference pairs (prompt or question, "
            "chosen, rejected and an image)"
        )
    if max_samples is not None:
        if max_samples < 1:  # zero would train on nothing and still exit 0
            raise DataValidationError(f"max_samples must be ≥ 1 (or unset for every pair), got {max_samples}")
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    fmt = detect_format(dataset.column_names, source) if dataset_format == "auto" else dataset_format
    missing = [c for c in REQUIRED[fmt] if c not in dataset.column_names]
    if missing:
        raise DataValidationError(
            f"{source}: format {fmt!r} needs columns {missing}; the data has {dataset.column_names}"
        )
    if fmt == "official":
        problems = []
        id_key = id_field(dataset.column_names)
        columns = ["image_path", *LOGIT_FIELDS, *([id_key] if id_key else [])]
        for i, row in enumerate(dataset.select_columns(columns)):
            try:
                resolve_image_path(row["image_path"], image_root)
            except ImageError as err:
                raise DataValidationError(f"{source} row {i}: field 'image_path': {err}") from err
            # δ is computed from these: the one parser (dama.official_release) names them, not the derived δ column;
            # every bad field of the file is reported together
            where = row_where(source, i, row, id_key)
            for name in LOGIT_FIELDS:
                try:
                    official_scores(row[name], where, name)
                except DamaError as err:
                    problems.append(err)
        if len(problems) == 1:
            raise problems[0]
        if problems:
            # NonFiniteError when every problem is a NaN/infinite score, as the parser raises for one
            kind = NonFiniteError if all(isinstance(p, NonFiniteError) for p in problems) else DataValidationError
            shown = [str(p) for p in problems[:MAX_REPORTED_ERRORS]]
            raise kind(f"{len(problems)} problem(s) in {source}:\n  " + "\n  ".join(shown))
        if delta_mean is None:
            delta_mean, _ = official_delta_mean(None)  # the official constant
    dataset = _to_trl(dataset, fmt, source, column)
    validate(dataset, source, image_root, hardness_column, check_images, require_images)
    return _resolve_images(dataset, image_root, source), delta_mean
