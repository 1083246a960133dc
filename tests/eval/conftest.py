"""Tiny hand-made benchmark files (COCO annotations, Object HalBench, POPE, AMBER) for the rule-based scorers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture
def write_responses(tmp_path: Path):
    """`write_responses(name, {id: text}, **fields)` -> path of a response JSONL in `dama eval generate`'s format."""

    def write(name: str, texts: dict, **extra) -> Path:
        rows = [
            {"id": str(key), "question": "Q", "response": text, "model": "tiny", "decoding": {"num_beams": 1}, **extra}
            for key, text in texts.items()
        ]
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        return path

    return write


# Image 1: a dog and a frisbee annotated, captions add "person" (a man). Image 2: a toilet; captions name a sink.
# Image 3: nothing annotated; the caption names a cat.
COCO_INSTANCES = {
    "images": [{"id": 1}, {"id": 2}, {"id": 3}],
    "categories": [{"id": 18, "name": "dog"}, {"id": 34, "name": "frisbee"}, {"id": 70, "name": "toilet"}],
    "annotations": [
        {"id": 100, "image_id": 1, "category_id": 18},
        {"id": 101, "image_id": 1, "category_id": 18},
        {"id": 102, "image_id": 1, "category_id": 34},
        {"id": 103, "image_id": 2, "category_id": 70},
    ],
}
COCO_CAPTIONS = {
    "images": [{"id": 1}, {"id": 2}, {"id": 3}],
    "annotations": [
        {"id": 1, "image_id": 1, "caption": "A man throws a frisbee to his dog."},
        {"id": 2, "image_id": 1, "caption": "Dogs playing in a park."},
        {"id": 3, "image_id": 2, "caption": "A bathroom with a toilet and a sink."},
        {"id": 4, "image_id": 3, "caption": "A kitten sleeping."},
    ],
}


@pytest.fixture
def coco_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "coco"
    folder.mkdir()
    (folder / "instances_val2014.json").write_text(json.dumps(COCO_INSTANCES))
    (folder / "captions_val2014.json").write_text(json.dumps(COCO_CAPTIONS))
    return folder


AMBER_ANNOTATIONS = [
    {"id": 1, "type": "generative", "truth": ["dog", "grass"], "hallu": ["frisbee", "cat"]},
    {"id": 2, "type": "generative", "truth": ["car"], "hallu": ["person"]},
    {"id": 3, "type": "discriminative-hallucination", "truth": "yes"},
    {"id": 4, "type": "discriminative-hallucination", "truth": "no"},
    {"id": 5, "type": "discriminative-attribute-state", "truth": "no"},
    {"id": 6, "type": "discriminative-attribute-number", "truth": "yes"},
    {"id": 7, "type": "relation", "truth": "no"},
]
AMBER_RELATION = {
    "dog": ["puppy"],
    "grass": ["lawn"],
    "frisbee": [],
    "cat": ["kitten"],
    "car": ["vehicle"],
    "person": ["man", "woman"],
    "tree": [],
    "traffic light": [],
}


@pytest.fixture
def amber_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "amber"
    (folder / "query").mkdir(parents=True)
    (folder / "annotations.json").write_text(json.dumps(AMBER_ANNOTATIONS))
    (folder / "relation.json").write_text(json.dumps(AMBER_RELATION))
    (folder / "safe_words.txt").write_text("tree\n")
    queries = [
        {"id": a["id"], "image": f"AMBER_{a['id']}.jpg", "query": "Describe this image."} for a in AMBER_ANNOTATIONS
    ]
    (folder / "query" / "query_all.json").write_text(json.dumps(queries))
    return folder
