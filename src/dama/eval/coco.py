"""Per-image ground-truth object classes from user-supplied COCO 2014 annotations, for CHAIR / Object HalBench.

Ground truth of an image (docs/eval.md, "CHAIR") = canonical classes of its instance annotations ∪ classes the CHAIR
engine finds in its reference captions. Reading `instances_*2014.json` (~160 MB for val) is slow, so the per-image
class sets are cached in one small JSON file keyed by image id, named after the synonym-list version and a
fingerprint of the annotation files (name, size, mtime) and of the CHAIR engine (synonym lines, singularisation and
merge tables, rules: `ChairEngine.fingerprint`), and written atomically.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from tqdm import tqdm

from dama.eval.chair import ChairEngine
from dama.eval.records import RecordError, read_json, write_json_atomic

SPLITS = ("val2014", "train2014")


def default_cache_dir() -> Path:
    """`$XDG_CACHE_HOME/dama/coco` (or `~/.cache/dama/coco`)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dama" / "coco"


def validate_coco_file(data: dict, path: Path) -> None:
    """Check the fields CHAIR reads from a COCO 2014 instances_/captions_ file; `RecordError` names file, entry, field.

    A wrong type would not always fail later (a string of captions is iterated character by character), and the
    ground truth would come out silently wrong.
    """
    captions = not path.name.startswith("instances_")
    needs = {
        "images": {"id": (int, str)},
        "annotations": {"image_id": (int, str), **({"caption": str} if captions else {"category_id": int})},
    }
    if not captions:
        needs["categories"] = {"id": int, "name": str}
    for section, fields in needs.items():
        entries = data.get(section, [])
        if not isinstance(entries, list):
            raise RecordError(f"{path}: '{section}' must be a list, got {type(entries).__name__}")
        for position, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise RecordError(f"{path}: {section}[{position}] must be an object, got {type(entry).__name__}")
            for field, kind in fields.items():
                value = entry.get(field)
                if isinstance(value, bool) or not isinstance(value, kind):
                    raise RecordError(
                        f"{path}: {section}[{position}] (id {entry.get('id')}): field {field!r} has the wrong type "
                        f"({type(value).__name__} {value!r:.60})"
                    )


class CocoGroundTruth:
    """Ground-truth classes per COCO image id from `annotations_dir` (instances_/captions_ {val,train}2014.json)."""

    def __init__(self, annotations_dir: str | Path, engine: ChairEngine, cache_dir: str | Path | None = None) -> None:
        self.dir = Path(annotations_dir)
        self.engine = engine
        if not self.dir.is_dir():
            raise RecordError(f"{self.dir}: COCO annotation folder not found")
        self.files: list[Path] = []
        for split in SPLITS:
            pair = [self.dir / f"instances_{split}.json", self.dir / f"captions_{split}.json"]
            present = [p.is_file() for p in pair]
            if any(present) and not all(present):
                missing = pair[present.index(False)]
                raise RecordError(f"{missing}: missing; ground truth needs both instances_ and captions_{split}.json")
            if all(present):
                self.files += pair
        if not self.files:
            raise RecordError(
                f"{self.dir}: no COCO 2014 annotations; expected instances_val2014.json and captions_val2014.json "
                "(or the train2014 pair) from https://cocodataset.org"
            )
        stats = [(p.name, p.stat().st_size, int(p.stat().st_mtime)) for p in self.files]
        # the engine's fingerprint covers the synonym lines, singular/merge tables and rules, so a changed list or
        # rule never reuses a cache built with the old one
        self.fingerprint = hashlib.sha256(json.dumps([stats, engine.fingerprint]).encode()).hexdigest()[:16]
        self.cache_path = Path(cache_dir or default_cache_dir()) / f"coco_gt_{engine.version}_{self.fingerprint}.json"
        self._classes: dict[str, list[str]] | None = None

    def describe(self) -> dict:
        """What the ground truth was built from, for results files."""
        return {"coco_files": [p.name for p in self.files], "fingerprint": self.fingerprint}

    def _load(self) -> dict[str, list[str]]:
        if self._classes is not None:
            return self._classes
        if self.cache_path.is_file():
            try:
                cached = read_json(self.cache_path)
                if cached.get("fingerprint") == self.fingerprint:
                    self._classes = cached["images"]
                    return self._classes
            except (RecordError, AttributeError, KeyError):
                pass  # a corrupt cache is rebuilt, never trusted
        self._classes = self._build()
        try:
            write_json_atomic(self.cache_path, {"fingerprint": self.fingerprint, "images": self._classes})
        except OSError as err:  # a read-only cache folder costs time on the next run, not this run's result
            print(f"warning: cannot write the ground-truth cache {self.cache_path} ({err})", file=sys.stderr)
        return self._classes

    def _build(self) -> dict[str, list[str]]:
        classes: dict[str, set[str]] = {}
        for path in self.files:
            data = read_json(path)
            if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
                raise RecordError(f"{path}: not a COCO annotation file (needs 'images' and 'annotations')")
            validate_coco_file(data, path)
            for image in data["images"]:
                classes.setdefault(str(image["id"]), set())
            if path.name.startswith("instances_"):
                names = {cat["id"]: cat["name"] for cat in data.get("categories", [])}
                for ann in data["annotations"]:
                    name = names.get(ann["category_id"])
                    if name is None:
                        raise RecordError(
                            f"{path}: annotation {ann.get('id')} has unknown category {ann['category_id']}"
                        )
                    classes.setdefault(str(ann["image_id"]), set()).add(self.engine.canonical(name) or name)
            else:
                for ann in tqdm(data["annotations"], desc=f"CHAIR on {path.name}", unit="caption", leave=False):
                    found = {m.cls for m in self.engine.extract(ann["caption"])}
                    classes.setdefault(str(ann["image_id"]), set()).update(found)
        return {image_id: sorted(found) for image_id, found in classes.items()}

    def classes(self, image_ids: Iterable[object]) -> dict[str, frozenset[str]]:
        """Ground-truth classes for each of `image_ids` (keys as strings); unknown ids raise `RecordError`."""
        table = self._load()
        wanted = [str(coco_image_id(i)) for i in image_ids]
        unknown = sorted({i for i in wanted if i not in table})
        if unknown:
            raise RecordError(
                f"{len(unknown)} image id(s) not in the COCO annotations of {self.dir} "
                f"({', '.join(p.name for p in self.files)}): {', '.join(unknown[:10])}"
                + (" ..." if len(unknown) > 10 else "")
            )
        return {i: frozenset(table[i]) for i in wanted}


def coco_image_id(value: object) -> int | str:
    """COCO ids are integers; accept 139, "139" and "COCO_val2014_000000000139.jpg"."""
    if isinstance(value, int):
        return value
    text = str(value)
    stem = text.rsplit("/", 1)[-1].rsplit(".", 1)[0].rsplit("_", 1)[-1]
    return int(stem) if stem.isdigit() else text
