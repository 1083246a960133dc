"""Record a run of RLAIF-V's own Object HalBench scorer (rule mode) as a test fixture (tests/eval/data/rlaif_v_chair_run).

`test_rlaif_v_chair_run.py` checks `dama`'s CHAIR engine with `--lemmatizer wordnet` against what this recorded: the
words RLAIF-V's `CHAIR.caption_to_words` found in every text, and the per-response and overall results of its
`compute_chair` (`gpt_process=False`, the rule mode), with real NLTK, on synthetic COCO-format annotations and
responses this script writes. NLTK's front end is replayed from the recording, so the test needs neither NLTK's data
nor RLAIF-V's code.

    python tests/eval/rlaif_v_chair_record.py --rlaif-v /path/to/RLAIF-V [--out tests/eval/data/rlaif_v_chair_run]

Needs: an RLAIF-V checkout (github.com/RLHF-V/RLAIF-V: eval/eval_gpt_obj_halbench.py, eval/data/synonyms_refine.txt);
NLTK with its `punkt_tab` and `wordnet` data. The module's other imports are answered by stand-ins: `spacy` (its
`en_core_web_trf` is used only by the llm mode's name reduction), `gpt4_grpc` (the judge client) and `jsonlines`.
Nothing of RLAIF-V's code is copied: the module is imported from the checkout and run unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import random
import sys
import types
from pathlib import Path

from amber_inference_record import plural  # the same plural rules (this script runs from tests/eval)

HERE = Path(__file__).parent
N_IMAGES = 30
SEED = 0
_IRREGULAR = {
    "man": "men",
    "woman": "women",
    "person": "people",
    "child": "children",
    "knife": "knives",
    "mouse": "mice",
    "sheep": "sheep",
    "bus": "buses",
    "glass": "glasses",
}
_FILLERS = [
    "A {x} next to {y}.",
    "There are {x} and {y} on the table.",
    "{X} sitting near {y}.",
    "The photo shows {x}, {y} and {z}.",
    "{X} is parked beside {y} in the street.",
    "In the background, {x} can be seen.",
    "Two {p} and a baby {animal} near the {x}.",
    "A toilet seat and {x} in a small bathroom.",
    "A {x} with a bow tie stands by the passenger train.",
    "Several wine glasses and hot dogs on a plate.",
    "A stove top oven and {x}.",
    "{P} are walking along the train track near home plate.",
]
_ANIMALS = ["elephant", "dog", "cat", "horse", "bird", "bear", "zebra", "giraffe", "cow", "sheep"]
_NON_COCO = ["tree", "building", "sky", "road", "grass", "window", "wall", "shirt", "hat", "water"]


def _sentence(rng: random.Random, words: list[str]) -> str:
    def pick() -> str:
        word = rng.choice(words)
        return (
            f"{rng.choice(['two', 'some', 'three'])} {plural(word, _IRREGULAR)}" if rng.random() < 0.3 else f"a {word}"
        )

    template = rng.choice(_FILLERS)
    fill = {k: pick() for k in ("x", "y", "z")}
    return template.format(
        **fill,
        X=fill["x"][0].upper() + fill["x"][1:],
        p=plural(rng.choice(words), _IRREGULAR),
        P=plural(rng.choice(words), _IRREGULAR).capitalize(),
        animal=rng.choice(_ANIMALS),
    )


def make_data(synonym_lines: list[str], seed: int = SEED) -> tuple[dict, dict, list[dict]]:
    """Synthetic COCO 2014 instances and captions (val; the train files are empty) and one response per image."""
    rng = random.Random(seed)
    synonyms = [[s.strip() for s in line.strip().split(", ")] for line in synonym_lines if line.strip()]
    classes = [line[0] for line in synonyms]
    categories = [{"id": i + 1, "name": name, "supercategory": "thing"} for i, name in enumerate(classes)]
    images, instances, captions, responses = [], [], [], []
    for image_id in range(1, N_IMAGES + 1):
        images.append({"id": image_id, "file_name": f"COCO_val2014_{image_id:012d}.jpg", "height": 480, "width": 640})
        present = rng.sample(range(len(classes)), rng.randint(1, 4))
        for category in present:
            instances.append({"id": len(instances) + 1, "image_id": image_id, "category_id": category + 1})
        # captions and responses name the present objects by any synonym, other COCO objects and non-COCO words
        named = [rng.choice(synonyms[c]) for c in present]
        for _ in range(5):
            words = named + [rng.choice(rng.choice(synonyms)) for _ in range(rng.randint(0, 1))] + _NON_COCO
            captions.append({"id": len(captions) + 1, "image_id": image_id, "caption": _sentence(rng, words)})
        words = named + [rng.choice(rng.choice(synonyms)) for _ in range(rng.randint(0, 3))] + _NON_COCO[:3]
        text = " ".join(_sentence(rng, words) for _ in range(rng.randint(2, 4)))
        responses.append({"image_id": image_id, "caption": text})
    header = {"info": {"description": "synthetic"}, "licenses": []}
    instances_file = {**header, "images": images, "annotations": instances, "categories": categories}
    captions_file = {**header, "images": images, "annotations": captions}
    return instances_file, captions_file, responses


def _stand_ins() -> None:
    """What eval_gpt_obj_halbench.py imports besides NLTK and the standard library, for its rule mode."""
    spacy = types.ModuleType("spacy")
    spacy.load = lambda name: None  # en_core_web_trf: llm mode only
    grpc = types.ModuleType("gpt4_grpc")
    grpc.Chat = lambda **kwargs: None  # the judge client: llm mode only
    jsonlines = types.ModuleType("jsonlines")  # .jsonl caption files only; this script writes .json
    sys.modules.update(spacy=spacy, gpt4_grpc=grpc, jsonlines=jsonlines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rlaif-v", type=Path, required=True, help="RLAIF-V checkout (eval/...)")
    parser.add_argument("--out", type=Path, default=HERE / "data" / "rlaif_v_chair_run")
    args = parser.parse_args()
    root = args.rlaif_v.resolve()
    synonym_lines = (root / "eval/data/synonyms_refine.txt").read_text(encoding="utf-8").splitlines()
    instances, captions, responses = make_data(synonym_lines)
    out = args.out.resolve()
    coco = out / "coco"
    coco.mkdir(parents=True, exist_ok=True)
    empty = {"info": {"description": "synthetic"}, "licenses": [], "images": [], "annotations": []}
    for name, data in {
        "instances_val2014.json": instances,
        "captions_val2014.json": captions,
        "instances_train2014.json": {**empty, "categories": instances["categories"]},
        "captions_train2014.json": empty,
    }.items():
        (coco / name).write_text(json.dumps(data) + "\n", encoding="utf-8")
    cap_file = out / "rlaif_v_captions.json"  # RLAIF-V's .json caption format, read by load_generated_captions
    cap_file.write_text(
        json.dumps({"overall": {}, "imgToEval": {str(r["image_id"]): r for r in responses}}) + "\n", encoding="utf-8"
    )

    _stand_ins()
    spec = importlib.util.spec_from_file_location("eval_gpt_obj_halbench", root / "eval/eval_gpt_obj_halbench.py")
    module = importlib.util.module_from_spec(spec)
    cwd = os.getcwd()
    os.chdir(root)  # CHAIR() reads ./eval/data/synonyms_refine.txt
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            spec.loader.exec_module(module)
            evaluator = module.CHAIR({r["image_id"] for r in responses}, str(coco), "")
            evaluator.get_annotations()
            output = evaluator.compute_chair(str(cap_file), -1, gpt_process=False)
    finally:
        os.chdir(cwd)

    texts = [c["caption"] for c in captions["annotations"]] + [r["caption"] for r in responses]
    words = {text: [node for node in evaluator.caption_to_words(text)[1]] for text in texts}
    front = {text: [module.lemma.lemmatize(w) for w in module.nltk.word_tokenize(text.lower())] for text in texts}
    overall = {k: v for k, v in output["overall_metrics"].items() if not k.startswith("all_gpt")}
    sentences = [
        {
            "image_id": s["image_id"],
            "generated": s["mscoco_generated_words"],
            "hallucinated": s["mscoco_hallucinated_words"],
            "gt": sorted(s["mscoco_gt_words"]),
        }
        for s in output["sentences"]
    ]
    recorded = {
        "nltk_version": module.nltk.__version__,
        "overall": overall,
        "sentences": sentences,
        "caption_to_words": words,
        "front_end": front,
    }
    (out / "responses.jsonl").write_text(
        "".join(
            json.dumps({"id": str(r["image_id"]), "image_id": r["image_id"], "question": "Describe this image.",
                        "response": r["caption"], "model": "synthetic", "decoding": {"num_beams": 3}}) + "\n"
            for r in responses
        ),
        encoding="utf-8",
    )  # fmt: skip
    cap_file.unlink()  # the same responses are in responses.jsonl
    (out / "expected.json").write_text(json.dumps(recorded, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {out}: {len(responses)} responses, {len(texts)} texts; RLAIF-V rule mode: {overall}")


if __name__ == "__main__":
    main()
