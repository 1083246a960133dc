"""Record a run of AMBER's own `inference.py` as a test fixture (tests/eval/data/amber_inference_run).

`test_amber_inference_run.py` checks `dama`'s reference extraction against what this recorded: the per-response
counts that AMBER's `inference.py` itself computed, with real NLTK, on responses this script writes. The test then
needs neither NLTK's data nor AMBER's code, so CI checks the transcription against the reference code's behaviour, not
against a hand transcription only.

    python tests/eval/amber_inference_record.py --amber /path/to/AMBER [--out tests/eval/data/amber_inference_run]

Needs: an AMBER checkout (github.com/junyangwang0410/AMBER: inference.py and data/); NLTK with its `punkt_tab`,
`averaged_perceptron_tagger_eng` and `wordnet` data (the `eval-reference` extra, docs/eval.md); no spaCy: the
reference's `spacy.load("en_core_web_lg")` is answered by a stand-in whose word similarity is one of `SIMILARITIES`
below, so that the similarity branches of the reference run too, deterministically. Nothing of AMBER's code is
copied: `inference.py` is imported from the checkout and its `main` is run unchanged on one response at a time; its
counters are read from the dict its `init()` returns.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import random
import re
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).parent
N_ITEMS = 60  # the first N_ITEMS generative ids of annotations.json
SEED = 0


def _bigrams(word: str) -> set[str]:
    padded = f"^{word.lower()}$"
    return {padded[i : i + 2] for i in range(len(padded) - 1)}


def initial_similarity(a: str, b: str) -> float:
    """0.9 when the words begin with the same letter (so > 0.8 decides many nouns), else the Jaccard overlap of their
    character bigrams (rarely > 0.8)."""
    if a[:1].lower() == b[:1].lower():
        return 0.9
    x, y = _bigrams(a), _bigrams(b)
    return len(x & y) / len(x | y) if x | y else 0.0


def no_similarity(a: str, b: str) -> float:
    return 0.0


SIMILARITIES: dict[str, Callable[[str, str], float]] = {
    "none": no_similarity,
    "initial": initial_similarity,
}

# --- responses: LLaVA-style descriptions built from each item's objects ------------------------------------------

_IRREGULAR = {
    "man": "men",
    "woman": "women",
    "person": "people",
    "child": "children",
    "leaf": "leaves",
    "knife": "knives",
    "mouse": "mice",
    "foot": "feet",
    "shelf": "shelves",
    "glass": "glasses",
}
_OTHER = [
    "scene",
    "atmosphere",
    "setting",
    "view",
    "area",
    "moment",
    "day",
    "side",
    "middle",
    "background",
    "image",
    "picture",
    "environment",
    "surface",
    "variety",
]
_ADJECTIVES = ["large", "small", "red", "orange", "wooden", "white", "black", "green", "old", "busy"]
_TEMPLATES = [
    "The image features {a}.",
    "In the image, {a} can be seen near {b}.",
    "{A} is visible in the background.",
    "There are {a} and {b} in the {o}.",
    "{A} stands next to {b}, creating a {adj} {o}.",
    "Additionally, {a} can be seen on the {o}.",
    "The {o} also includes {a}, {b}, and {c}.",
    "{A} and {b} are located in the {o} of the {o2}.",
    "Overall, the {o} shows {a} with {b}.",
    "{P} are visible in the {o}.",
    "{S} and {P2} fill the {o}.",
]


def plural(word: str, irregular: dict[str, str] = _IRREGULAR) -> str:
    """The plural of a word, or of a phrase's last word: `irregular`, else the regular English rules."""
    head, _, last = word.rpartition(" ")
    if last in irregular:
        last = irregular[last]
    elif last.endswith(("s", "x", "ch", "sh")):
        last += "es"
    elif last.endswith("y") and last[-2:-1] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last += "s"
    return f"{head} {last}".strip()


def make_responses(items: list[dict], relation: dict, safe_words: list[str], seed: int = SEED) -> dict[int, str]:
    """One description per generative item: its truth and hallu objects, their associates, safe words, other
    vocabulary and words outside it, in regular and irregular plurals and sentence-initial capitals."""
    rng = random.Random(seed)
    vocabulary = sorted(set(relation) | {w for ws in relation.values() for w in ws})

    def phrase(word: str) -> str:
        r = rng.random()
        if r < 0.35:
            return f"{rng.choice(['two', 'three', 'several', 'many', 'some'])} {plural(word)}"
        if r < 0.55:
            return f"a {rng.choice(_ADJECTIVES)} {word}"
        return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"

    responses = {}
    for item in items:
        truth, hallu = item["truth"], item["hallu"]
        associates = [w for obj in truth + hallu for w in relation.get(obj, [])]
        pool = [rng.choice(truth) for _ in range(3)] if truth else []
        pool += [rng.choice(hallu) for _ in range(rng.choice([0, 0, 1, 2]))] if hallu else []
        pool += [rng.choice(associates) for _ in range(rng.randint(0, 2))] if associates else []
        pool += [rng.choice(vocabulary) for _ in range(rng.choice([0, 0, 0, 1]))]
        pool += [rng.choice(safe_words) for _ in range(rng.randint(0, 1))]
        rng.shuffle(pool)
        sentences = []
        while pool:
            template = rng.choice(_TEMPLATES)
            need = sum(template.count(key) for key in ("{a}", "{A}", "{b}", "{c}", "{P}", "{S}", "{P2}"))
            words, pool = pool[:need], pool[need:]
            words += [rng.choice(truth or vocabulary) for _ in range(need - len(words))]
            first = phrase(words[0])
            sentences.append(
                template.format(
                    a=first,
                    A=first[0].upper() + first[1:],
                    b=phrase(words[1]) if need > 1 else "",
                    c=phrase(words[2]) if need > 2 else "",
                    o=rng.choice(_OTHER),
                    o2=rng.choice(_OTHER),
                    adj=rng.choice(_ADJECTIVES),
                    # a bare noun opening the sentence: capitalised, so the reference's case-sensitive match drops it
                    P=plural(words[0]).capitalize(),
                    S=words[0].capitalize(),
                    P2=plural(words[1]) if need > 1 else "",
                )
            )
        responses[item["id"]] = " ".join(sentences)
    return responses


# --- running the reference ---------------------------------------------------------------------------------------

# inference.py's generative counters (its data/metrics.txt names); expected.json lists them per item in this order
COUNTERS = (
    "chair_score",
    "chair_num",
    "safe_cover_score",
    "safe_cover_num",
    "hallu_cover_score",
    "hallu_cover_num",
    "non_hallu_score",
    "non_hallu_num",
)


class _StandInSpacy:
    """What inference.py needs of spaCy: `spacy.load(name)(word).similarity(other)`."""

    def __init__(self) -> None:
        self.similarity: Callable[[str, str], float] = no_similarity
        outer = self

        class Doc:
            def __init__(self, text: str) -> None:
                self.text = text

            def similarity(self, other: Doc) -> float:
                return outer.similarity(self.text, other.text)

        self.module = types.ModuleType("spacy")
        self.module.load = lambda name: Doc


def load_reference(amber: Path, spacy: _StandInSpacy) -> types.ModuleType:
    """Import the checkout's inference.py with the stand-in spaCy."""
    sys.modules["spacy"] = spacy.module
    spec = importlib.util.spec_from_file_location("amber_inference", amber / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_reference(module: types.ModuleType, amber: Path, rows: list[dict], workdir: Path) -> dict[str, float]:
    """inference.py's `main` on `rows` (generative evaluation); returns its counters less their start values."""
    data = workdir / "inference_data.json"
    data.write_text(json.dumps(rows), encoding="utf-8")
    module.args = args = argparse.Namespace(
        word_association=str(amber / "data/relation.json"),
        safe_words=str(amber / "data/safe_words.txt"),
        inference_data=str(data),
        annotation=str(amber / "data/annotations.json"),
        metrics=str(amber / "data/metrics.txt"),
        similarity_score=0.8,
        evaluation_type="g",
    )
    start, seen = module.init(), {}
    original_init = module.init

    def init() -> dict:
        seen["metrics"] = original_init()
        return seen["metrics"]

    module.init = init
    try:
        with contextlib.redirect_stdout(io.StringIO()) as printed, contextlib.redirect_stderr(io.StringIO()):
            module.main(args)
    finally:
        module.init = original_init
    counts = {key: round(seen["metrics"][key] - start[key]) for key in COUNTERS}
    # what it prints, "CHAIR:\t\t 20.0" etc.: the published (rounded) values
    counts["printed"] = {
        name.strip(): float(value)
        for name, value in (line.split(":") for line in printed.getvalue().splitlines()[1:] if ":" in line)
    }
    return counts


def record_nltk(texts: list[str]) -> dict:
    """The reference's NLTK steps, recorded: the tags of each text and the WordNet lemma of each NN* word."""
    import nltk
    from nltk.stem import WordNetLemmatizer

    lemmatizer = WordNetLemmatizer()
    tags = {text: nltk.pos_tag(nltk.word_tokenize(text)) for text in texts}
    lemmas = {word: lemmatizer.lemmatize(word) for tagged in tags.values() for word, pos in tagged if pos[:2] == "NN"}
    return {"nltk_version": nltk.__version__, "tags": tags, "lemmas": dict(sorted(lemmas.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--amber", type=Path, required=True, help="AMBER checkout (inference.py, data/)")
    parser.add_argument("--out", type=Path, default=HERE / "data" / "amber_inference_run")
    args = parser.parse_args()
    annotations = json.loads((args.amber / "data/annotations.json").read_text(encoding="utf-8"))
    relation = json.loads((args.amber / "data/relation.json").read_text(encoding="utf-8"))
    safe_text = (args.amber / "data/safe_words.txt").read_text(encoding="utf-8")
    items = [item for item in annotations if item["type"] == "generative"][:N_ITEMS]
    responses = make_responses(items, relation, [w for w in safe_text.split("\n") if w])
    rows = [{"id": key, "response": text} for key, text in responses.items()]

    spacy = _StandInSpacy()
    module = load_reference(args.amber, spacy)
    expected: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, similarity in SIMILARITIES.items():
            spacy.similarity = similarity
            per_item = {}
            for row in rows:
                counts = run_reference(module, args.amber, [row], Path(tmp))
                per_item[str(row["id"])] = [counts[key] for key in COUNTERS]
            total = run_reference(module, args.amber, rows, Path(tmp))
            expected[name] = {"total": total, "items": per_item}
            print(f"similarity {name}: inference.py printed {total['printed']}")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "annotations.json").write_text(json.dumps(items, indent=1) + "\n", encoding="utf-8")
    (args.out / "relation.json").write_bytes((args.amber / "data/relation.json").read_bytes())
    (args.out / "safe_words.txt").write_text(safe_text, encoding="utf-8")
    with open(args.out / "responses.jsonl", "w", encoding="utf-8") as out:
        for row in rows:
            out.write(
                json.dumps(
                    {
                        "id": str(row["id"]),
                        "question": "Describe this image.",
                        "response": row["response"],
                        "model": "synthetic",
                        "decoding": {"num_beams": 1},
                    }
                )
                + "\n"
            )
    nltk_record = record_nltk([row["response"] for row in rows])
    (args.out / "nltk.json").write_text(json.dumps(nltk_record, indent=0) + "\n", encoding="utf-8")
    text = json.dumps({"counters": COUNTERS, **expected}, indent=1)
    text = re.sub(r"\[\s+([-\d,\s]+?)\s+\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text)  # a list a line
    (args.out / "expected.json").write_text(text + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({len(rows)} responses, NLTK {nltk_record['nltk_version']})")


if __name__ == "__main__":
    main()
