"""AMBER (Wang et al., "AMBER: An LLM-free Multi-dimensional Benchmark for MLLMs Hallucination Evaluation", 2023).

Files, read from `--amber-dir` (annotations Apache-2.0): `annotations.json` (a list of `{id, type, truth, hallu}`),
`relation.json` (object -> associated words), `safe_words.txt` (words always ignored), `query/*.json`.

Generative ("Describe this image.", docs/eval.md "AMBER"), in one of two extractions, recorded as
`extraction.noun_extraction` in every result:
- `reference` (AMBER's inference.py exactly; needs the `eval-reference` extra: NLTK with its punkt, tagger and WordNet
  data, spaCy with `en_core_web_lg`): NLTK tokens tagged NN* by `nltk.pos_tag`, lemmatised with WordNet, not
  lower-cased (a sentence-initial "Dog" stays "Dog" and is dropped; "men" stays "men"; "leaves" -> "leaf"), kept if
  they are relation.json words; matching is case-sensitive, and after the exact checks every noun is compared with
  the hallu words and then the truth words by spaCy similarity (> 0.8; first similar word wins).
- `vocab-match` (the offline fallback): lower-case Treebank tokens, singularised through a plural table generated
  from the vocabulary, multi-word vocabulary phrases merged, kept if in the vocabulary (relation.json keys and
  values ∪ annotation objects); the modal "can" ("can be seen") is not counted, but a vocabulary word used as an
  adjective ("orange" shirt) is, where the tagger would drop it. Similarity only with `--similarity spacy`.
Per noun, as in the reference: a global safe word is a non-hallucinated mention; a truth word or one of its
associates covers that truth object; a hallu word or associate hits that hallu target; a noun matching no truth word
or associate (directly, or by word similarity) is a hallucinated mention. CHAIR = 100 · hallucinated / mentions;
Cover = 100 · covered truth objects / truth objects; Hal = 100 · responses with ≥1 hallucinated mention / responses;
Cog = 100 · hit hallu targets / hallu targets; the `*_reported` values are rounded as inference.py prints them.

Discriminative: each answer normalised to Yes/No (first word yes/no; otherwise POPE's rule: "no"/"not" in the first
sentence -> No, counted in `n_fallback`); "No" is the positive class. AMBER score = ((100 − CHAIR) + F1) / 2.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from dama.eval.benchmark import Benchmark, Decoding, add_response_arguments, output_folder, write_outputs
from dama.eval.chair import is_word, tokenize
from dama.eval.plurals import lemma_table
from dama.eval.pope import parse_answer
from dama.eval.records import (
    RecordError,
    completeness,
    load_responses,
    match_ids,
    read_json,
    require_field,
    run_metadata,
)

# annotations.json `type` -> (dimension, attribute sub-type). These are the type names of AMBER's released file;
# its inference.py counts "discriminative-hallucination" as existence, the three attribute types as attribute, and
# every other non-generative type ("discriminative-relation", "relation") as relation. Unknown types are an error.
DISCRIMINATIVE_TYPES: dict[str, tuple[str, str | None]] = {
    "discriminative-hallucination": ("existence", None),
    "discriminative-attribute-state": ("attribute", "attribute-state"),
    "discriminative-attribute-number": ("attribute", "attribute-number"),
    "discriminative-attribute-action": ("attribute", "attribute-action"),
    "discriminative-relation": ("relation", None),
    "relation": ("relation", None),
}
# inference.py's F1 adds this to P + R (both as fractions); existence alone uses 0.001.
F1_EPSILON = {"existence": 0.001}
F1_EPSILON_DEFAULT = 0.0001
# inference.py starts every counter's denominator at 0.001 (data/metrics.txt); the pooled attribute dimension adds
# three counters (state + number + action), so its denominators start at 0.003.
DENOMINATOR_START = {"attribute": 0.003}
DENOMINATOR_START_DEFAULT = 0.001


class Similarity(Protocol):
    """Word-similarity backend: AMBER's reference also matches words whose vectors are similar (> 0.8)."""

    name: str

    def similar(self, a: str, b: str) -> bool: ...


class NoSimilarity:
    """The default: exact (singularised) word matches only."""

    name = "none"

    def similar(self, a: str, b: str) -> bool:
        return False


class SpacySimilarity:
    """spaCy word vectors, as AMBER's reference (`en_core_web_lg`, threshold 0.8); only if spaCy and the model exist."""

    def __init__(self, model: str = "en_core_web_lg", threshold: float = 0.8) -> None:
        try:
            import spacy

            self.nlp = spacy.load(model)
        except (ImportError, OSError) as err:
            raise RecordError(
                f"similarity backend 'spacy' needs spaCy and its {model} model installed ({err})"
            ) from err
        self.name = f"spacy:{model}>{threshold}"
        self.threshold = threshold
        self._docs: dict[str, object] = {}

    def _doc(self, word: str):
        if word not in self._docs:
            self._docs[word] = self.nlp(word)
        return self._docs[word]

    def similar(self, a: str, b: str) -> bool:
        return self._doc(a).similarity(self._doc(b)) > self.threshold


def build_similarity(name: str) -> Similarity:
    """`none` (default) or `spacy`."""
    if name == "none":
        return NoSimilarity()
    if name == "spacy":
        return SpacySimilarity()
    raise ValueError(f"unknown similarity backend {name!r}; choose none or spacy")


EXTRACTIONS = ("auto", "reference", "vocab-match")
# vocab-match: "can" is a modal, not an object, unless followed by one of these (or by punctuation / the end):
# "a can of soda", "the can is", "a soda can next to ..."
_NOUN_CAN_FOLLOWERS = frozenset(
    """of on in at with next near by from to for behind under beside and or is are was were has have had
    sits sitting stands standing lies lying placed filled that which""".split()
)


class ReferenceNouns:
    """inference.py's `extract_nouns`: `lemmatize(word)` for every (word, tag) of `tag(text)` whose tag starts
    with NN. `tag` and `lemmatize` are NLTK's (`nltk_nouns()`) for reference numbers."""

    def __init__(self, tag: Callable[[str], list[tuple[str, str]]], lemmatize: Callable[[str], str], name: str):
        self.tag, self.lemmatize, self.name = tag, lemmatize, name

    def __call__(self, text: str) -> list[str]:
        return [self.lemmatize(word) for word, pos in self.tag(text) if pos.startswith("NN")]


def nltk_nouns() -> ReferenceNouns:
    """The reference noun extractor: `nltk.word_tokenize` + `nltk.pos_tag` + `WordNetLemmatizer().lemmatize`."""
    try:
        import nltk
        from nltk.stem import WordNetLemmatizer

        lemmatizer = WordNetLemmatizer()

        def tag(text: str) -> list[tuple[str, str]]:
            return nltk.pos_tag(nltk.word_tokenize(text))

        tag("A dog.")  # fail here, not mid-run, when a data package is missing
        lemmatizer.lemmatize("dogs")
    except (ImportError, LookupError) as err:
        raise RecordError(
            "AMBER reference extraction needs NLTK and its data (pip install 'dama[eval-reference]'; then "
            "python -m nltk.downloader punkt punkt_tab averaged_perceptron_tagger averaged_perceptron_tagger_eng "
            f"wordnet): {err}"
        ) from err
    return ReferenceNouns(tag, lemmatizer.lemmatize, f"nltk-{nltk.__version__}+wordnet")


def _words(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(word, str) for word in value)


def validate_amber_files(annotations: object, relation: object, annotations_path: Path, relation_path: Path) -> None:
    """Check the structure of AMBER's annotations.json and relation.json; `RecordError` naming file, entry and field.

    A wrong type would not fail later: a string where a list is expected is iterated character by character and the
    metrics come out wrong with no error. The reference format (AMBER's data/annotations.json): a list of objects with
    `id`, `type`; generative items carry `truth` and `hallu` lists of words, the others a `truth` string (yes/no).
    relation.json maps a word to a list of associated words.
    """
    if not isinstance(annotations, list):
        raise RecordError(f"{annotations_path}: expected a JSON list of {{id, type, truth, ...}}")
    for position, item in enumerate(annotations):
        where = f"{annotations_path} entry {position}"
        if not isinstance(item, dict):
            raise RecordError(f"{where}: expected an object, got {type(item).__name__}")
        if isinstance(item.get("id"), bool) or not isinstance(item.get("id"), (int, str)):
            raise RecordError(f"{where}: field 'id' must be a number or a string, got {item.get('id')!r}")
        where = f"{annotations_path} entry {position} (id {item['id']})"
        kind = item.get("type")
        if not isinstance(kind, str):
            raise RecordError(f"{where}: field 'type' must be a string, got {kind!r}")
        if kind == "generative":
            for field in ("truth", "hallu"):
                if field in item and not _words(item[field]):
                    got = type(item[field]).__name__
                    raise RecordError(f"{where}: field {field!r} must be a list of words (strings), got {got}")
        elif not isinstance(item.get("truth"), str):
            raise RecordError(f"{where}: field 'truth' must be the string 'yes' or 'no', got {item.get('truth')!r}")
    if not isinstance(relation, dict):
        raise RecordError(f"{relation_path}: expected a JSON object word -> [associated words]")
    for word, associated in relation.items():
        if not _words(associated):
            raise RecordError(
                f"{relation_path}: entry {word!r} must be a list of words (strings), got {type(associated).__name__}"
            )


class Amber:
    """AMBER annotations loaded from a folder, with the vocabulary-match noun extractor and the reference rules."""

    def __init__(self, amber_dir: str | Path) -> None:
        self.dir = Path(amber_dir)
        data = read_json(self.dir / "annotations.json")
        if not isinstance(data, list):
            raise RecordError(f"{self.dir / 'annotations.json'}: expected a JSON list of {{id, type, truth, ...}}")
        self.items: dict[str, dict] = {}
        for position, item in enumerate(data):
            if not isinstance(item, dict) or "id" not in item or "type" not in item:
                raise RecordError(f"{self.dir / 'annotations.json'} item {position}: needs 'id' and 'type'")
            self.items[str(item["id"])] = item
        relation = read_json(self.dir / "relation.json")
        validate_amber_files(data, relation, self.dir / "annotations.json", self.dir / "relation.json")
        if not isinstance(relation, dict):
            raise RecordError(f"{self.dir / 'relation.json'}: expected a JSON object word -> [associated words]")
        self.association = {k.lower(): [w.lower() for w in v] for k, v in relation.items()}
        # inference.py uses relation.json and safe_words.txt as they are (case-sensitive, lines cut at "\n")
        self.raw_association: dict[str, list[str]] = relation
        self.hallucination_words = set(relation) | {w for ws in relation.values() for w in ws}
        safe_path = self.dir / "safe_words.txt"
        if not safe_path.is_file():
            raise RecordError(f"{safe_path}: file not found")
        safe_text = safe_path.read_text(encoding="utf-8")
        self.raw_safe_words = set(safe_text.split("\n"))
        self.safe_words = {line.strip().lower() for line in safe_text.splitlines()} - {""}
        vocabulary = set(self.association) | {w for ws in self.association.values() for w in ws}
        for item in self.items.values():
            if item["type"] == "generative":
                vocabulary |= {w.lower() for w in [*item.get("truth", []), *item.get("hallu", [])]}
        self.vocabulary = vocabulary
        self.singular = lemma_table(vocabulary)
        self.phrases = {tuple(w.split()): w for w in vocabulary if " " in w}
        self.max_words = max((len(p) for p in self.phrases), default=1)

    def ids(self, kind: str) -> list[str]:
        """Annotation ids of the generative (`g`) or discriminative (`d`) task, in file order."""
        return [k for k, item in self.items.items() if (item["type"] == "generative") == (kind == "g")]

    def nouns(self, text: str) -> list[str]:
        """Vocabulary nouns of `text` in order, repeats kept (the reference does not de-duplicate)."""
        # punctuation tokens stay in until after merging, so phrases never span "traffic. light"
        surface = tokenize(text)
        tokens = [self.singular.get(t, t) for t in surface]
        for i, token in enumerate(surface):  # the modal "can" ("can be seen") is no object
            following = surface[i + 1] if i + 1 < len(surface) else "."
            if token == "can" and is_word(following) and following not in _NOUN_CAN_FOLLOWERS:
                tokens[i] = "can (modal)"
        found, i = [], 0
        while i < len(tokens):
            for width in range(min(self.max_words, len(tokens) - i), 1, -1):
                phrase = self.phrases.get(tuple(tokens[i : i + width]))
                if phrase is not None:
                    found.append(phrase)
                    i += width
                    break
            else:
                if tokens[i] in self.vocabulary:
                    found.append(tokens[i])
                i += 1
        return found

    def _owned(self, objects: Sequence[str]) -> list[tuple[str, int]]:
        # The reference's search order: associates of every object first, then the objects; first match wins.
        words = [(w, i) for i, obj in enumerate(objects) for w in self.association.get(obj.lower(), [])]
        return words + [(obj.lower(), i) for i, obj in enumerate(objects)]

    def generative_item(self, key: str, text: str, similarity: Similarity) -> dict:
        """Per-response counts: mentions, hallucinated mentions, covered truth objects, hit hallu targets."""
        item = self.items[key]
        truth, hallu = list(item.get("truth", [])), list(item.get("hallu", []))
        safe, hal = self._owned(truth), self._owned(hallu)
        covered, hit, hallucinated = set(), set(), []
        nouns = self.nouns(text)
        for noun in nouns:
            if noun in self.safe_words:
                continue
            owner = next((i for w, i in safe if w == noun), None)
            if owner is not None:
                covered.add(owner)
                continue
            owner = next((i for w, i in hal if w == noun), None)
            if owner is None and not isinstance(similarity, NoSimilarity):
                owner = next((i for w, i in hal if similarity.similar(noun, w)), None)
            if owner is not None:
                hit.add(owner)
            if not isinstance(similarity, NoSimilarity):
                owner = next((i for w, i in safe if similarity.similar(noun, w)), None)
                if owner is not None:
                    covered.add(owner)
                    continue
            hallucinated.append(noun)
        return {
            "id": key,
            "nouns": nouns,
            "hallucinated": hallucinated,
            "covered": sorted(truth[i] for i in covered),
            "hit_hallu": sorted(hallu[i] for i in hit),
            "n_truth": len(truth),
            "n_hallu": len(hallu),
        }

    def reference_item(self, key: str, text: str, nouns: Callable[[str], list[str]], similarity: Similarity) -> dict:
        """inference.py's generative loop (L92-171) for one response, transcribed: case-sensitive matching, and
        after the exact checks the hallu words, then the truth words, compared by `similarity`."""
        item = self.items[key]
        truth, hallu = list(item.get("truth", [])), list(item.get("hallu", []))
        missing = [w for w in truth + hallu if w not in self.raw_association]
        if missing:
            raise RecordError(f"{self.dir / 'relation.json'}: no entry for {missing[0]!r} (annotation id {key})")
        found = [n for n in nouns(text) if n in self.hallucination_words]
        # (word, owner index): every object's associates in object order, then the objects themselves
        safe = [(w, i) for i, obj in enumerate(truth) for w in self.raw_association[obj]]
        safe += [(obj, i) for i, obj in enumerate(truth)]
        hal = [(w, i) for i, obj in enumerate(hallu) for w in self.raw_association[obj]]
        hal += [(obj, i) for i, obj in enumerate(hallu)]
        covered, hit, hallucinated = set(), set(), []
        for noun in found:
            if noun in self.raw_safe_words:
                continue
            owner = next((i for w, i in safe if w == noun), None)
            if owner is not None:
                covered.add(owner)
                continue
            owner = next((i for w, i in hal if w == noun), None)
            if owner is not None:
                hit.add(owner)
            owner = next((i for w, i in hal if similarity.similar(noun, w)), None)
            if owner is not None:
                hit.add(owner)
            owner = next((i for w, i in safe if similarity.similar(noun, w)), None)
            if owner is not None:
                covered.add(owner)
                continue
            hallucinated.append(noun)
        return {
            "id": key,
            "nouns": found,
            "hallucinated": hallucinated,
            "covered": sorted(truth[i] for i in covered),
            "hit_hallu": sorted(hallu[i] for i in hit),
            "n_truth": len(truth),
            "n_hallu": len(hallu),
            "n_covered": len(covered),
            "n_hit_hallu": len(hit),
        }


def _pct(num: float, den: float) -> float | None:
    return None if den == 0 else 100.0 * num / den


def generative_metrics(details: Sequence[dict]) -> dict:
    """CHAIR, Cover, Hal, Cog (percent) from `Amber.generative_item` / `reference_item` records, exact and as
    inference.py prints them (`*_reported`: denominators start at 0.001, rounded to one decimal, L259-262)."""
    mentions = sum(len(d["nouns"]) for d in details)
    hallucinated = sum(len(d["hallucinated"]) for d in details)
    covered = sum(d.get("n_covered", len(d["covered"])) for d in details)
    hit = sum(d.get("n_hit_hallu", len(d["hit_hallu"])) for d in details)
    n_truth, n_hallu = sum(d["n_truth"] for d in details), sum(d["n_hallu"] for d in details)
    clean = sum(1 for d in details if not d["hallucinated"])
    start = DENOMINATOR_START_DEFAULT
    return {
        "CHAIR": _pct(hallucinated, mentions),
        "Cover": _pct(covered, n_truth),
        "Hal": _pct(len(details) - clean, len(details)),
        "Cog": _pct(hit, n_hallu),
        "CHAIR_reported": round(hallucinated / (mentions + start) * 100, 1),
        "Cover_reported": round(covered / (n_truth + start) * 100, 1),
        "Hal_reported": round(100 - clean / (len(details) + start) * 100, 1),
        "Cog_reported": round(hit / (n_hallu + start) * 100, 1),
        "n_responses": len(details),
        "n_mentions": mentions,
        "n_hallucinated_mentions": hallucinated,
    }


def normalize_yes_no(text: str) -> tuple[str, bool]:
    """("Yes" | "No", whether the POPE fallback was needed): first word yes/no, else no/not in the first sentence."""
    match = re.match(r"\W*(\w+)", text.lower())
    if match and match.group(1) in ("yes", "no"):
        return match.group(1).capitalize(), False
    return parse_answer(text).capitalize(), True


def discriminative_metrics(
    pairs: Iterable[tuple[str, str]],
    epsilon: float = F1_EPSILON_DEFAULT,
    start: float = DENOMINATOR_START_DEFAULT,
) -> dict:
    """Accuracy, Precision, Recall, F1 in percent with "No" as the positive class, from (truth, answer) pairs.

    `f1` is exact (2PR / (P + R)); the `*_reported` values are computed as AMBER's inference.py prints them, the
    numbers in published tables: every denominator starts at `start`, each of Accuracy, P and R is rounded to one
    decimal, and F1 = round(100 · 2pr / (p + r + `epsilon`), 1) from the rounded p = P/100, r = R/100.
    """
    pairs = [(t.lower(), a.lower()) for t, a in pairs]
    n = len(pairs)
    correct = sum(1 for t, a in pairs if t == a)
    answered_no = sum(1 for _, a in pairs if a == "no")
    truth_no = sum(1 for t, _ in pairs if t == "no")
    true_no = sum(1 for t, a in pairs if t == "no" and a == "no")
    precision, recall = _pct(true_no, answered_no), _pct(true_no, truth_no)
    f1 = (
        None
        if precision is None or recall is None
        else (0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    )
    p_rep = round(true_no / (answered_no + start) * 100, 1)
    r_rep = round(true_no / (truth_no + start) * 100, 1)
    f1_rep = round(2 * (p_rep / 100) * (r_rep / 100) / ((p_rep / 100) + (r_rep / 100) + epsilon) * 100, 1)
    return {
        "accuracy": _pct(correct, n),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy_reported": round(correct / (n + start) * 100, 1),
        "precision_reported": p_rep,
        "recall_reported": r_rep,
        "f1_reported": f1_rep,
        "n": n,
    }


def score(
    responses_path: str | Path,
    amber_dir: str | Path,
    kind: str,
    similarity: Similarity | None = None,
    extraction: str = "vocab-match",
    nouns: Callable[[str], list[str]] | None = None,
) -> tuple[str, dict, list[dict]]:
    """Score the generative (`kind="g"`) or discriminative (`"d"`) half; returns `(stem, result, details)`.

    Generative `extraction`: `reference` (inference.py exactly: `nouns` defaults to NLTK's, `similarity` to spaCy
    `en_core_web_lg`; an error if they are not installed), `vocab-match` (offline; `similarity` defaults to none), or
    `auto` (reference when its resources are installed, else vocab-match). The result records which one ran.

    Response ids of the other half are ignored and counted (`dama eval generate --bench amber` writes both halves to
    one file); ids AMBER does not have are an error; missing responses make the result partial.
    """
    amber = Amber(amber_dir)
    responses = load_responses(responses_path)
    expected = amber.ids(kind)
    other = set(amber.ids("d" if kind == "g" else "g"))
    ours = {k: v for k, v in responses.items() if k not in other}
    present = match_ids(expected, ours, responses_path, str(amber.dir / "annotations.json"))
    meta = run_metadata([responses[k] for k in present], responses_path)
    common = {
        **meta,
        "annotations": {"amber_dir": str(amber.dir), "vocabulary_size": len(amber.vocabulary)},
        "responses_file": str(responses_path),
        **completeness(expected, present),
        "n_ignored_other_task": len(responses) - len(ours),
    }
    if kind == "g":
        if extraction not in EXTRACTIONS:
            raise ValueError(f"unknown AMBER extraction {extraction!r}; choose from {', '.join(EXTRACTIONS)}")
        if extraction == "auto":
            try:
                nouns, similarity = nouns or nltk_nouns(), similarity or SpacySimilarity()
                extraction = "reference"
            except RecordError:
                extraction = "vocab-match"
        if extraction == "reference":
            nouns, similarity = nouns or nltk_nouns(), similarity or SpacySimilarity()
            details = [
                amber.reference_item(k, responses[k]["response"], nouns, similarity)
                for k in tqdm(present, desc="AMBER generative", unit="response", leave=False)
            ]
            settings = {
                "noun_extraction": "reference",
                "tagger": getattr(nouns, "name", "custom"),
                "similarity": similarity.name,
                "reference_exact": getattr(nouns, "name", "").startswith("nltk")
                and similarity.name == "spacy:en_core_web_lg>0.8",
            }
        else:
            similarity = similarity or NoSimilarity()
            details = [
                amber.generative_item(k, responses[k]["response"], similarity)
                for k in tqdm(present, desc="AMBER generative", unit="response", leave=False)
            ]
            settings = {"noun_extraction": "vocab-match", "similarity": similarity.name, "reference_exact": False}
        result = {
            "benchmark": "amber-g",
            "split": "generative",
            **common,
            "extraction": settings,
            "metrics": generative_metrics(details),
            "units": "percent (CHAIR, Cover, Hal, Cog)",
        }
        return "amber-g", result, details
    details, by_type, fallbacks, not_exact = [], {}, 0, 0
    for key in present:
        item = amber.items[key]
        if item["type"] not in DISCRIMINATIVE_TYPES:
            raise RecordError(
                f"{amber.dir / 'annotations.json'}: id {key} has unknown type {item['type']!r} "
                f"(expected one of {', '.join(sorted(DISCRIMINATIVE_TYPES))})"
            )
        text = responses[key]["response"]
        answer, fallback = normalize_yes_no(text)
        fallbacks += fallback
        not_exact += text not in ("Yes", "No")
        truth = str(item["truth"]).lower()
        details.append({"id": key, "type": item["type"], "truth": truth, "answer": answer, "fallback": fallback})
        dimension, subtype = DISCRIMINATIVE_TYPES[item["type"]]
        for group in (dimension, subtype):
            if group is not None:
                by_type.setdefault(group, []).append((truth, answer))
    metrics = discriminative_metrics((d["truth"], d["answer"]) for d in details)
    for group, pairs in sorted(by_type.items()):
        group_metrics = discriminative_metrics(
            pairs,
            F1_EPSILON.get(group, F1_EPSILON_DEFAULT),
            DENOMINATOR_START.get(group, DENOMINATOR_START_DEFAULT),
        )
        metrics.update({f"{group}/{name}": value for name, value in group_metrics.items()})
    result = {
        "benchmark": "amber-d",
        "split": "discriminative",
        **common,
        "extraction": {
            "yes_no": "first word yes/no, else POPE rule on the first sentence",
            "n_fallback": fallbacks,
            # inference.py compares the response with exactly "Yes" / "No"; other answers are normalised here
            "n_not_exact_yes_no": not_exact,
        },
        "metrics": metrics,
        "units": "percent (accuracy, precision, recall, f1); positive class = No",
    }
    return "amber-d", result, details


def amber_score(chair: float, f1: float) -> float:
    """AMBER score = ((100 − CHAIR) + F1) / 2, from the generative CHAIR and the discriminative F1 (percent)."""
    return ((100.0 - chair) + f1) / 2.0


# --- the benchmark records -----------------------------------------------------------------------------------------


def read_questions(path: Path) -> list[dict]:
    """AMBER's query files (`query/query_*.json`, a JSON list of {id, image, query}) as generation items."""
    data = read_json(path)
    if not isinstance(data, list):
        raise RecordError(f"{path}: expected an AMBER query file (a JSON list of {{id, image, query}})")
    items = []
    for index, row in enumerate(data):
        where = f"{path} item {index}"
        qid, question = require_field(row, "id", where), require_field(row, "query", where)
        items.append(
            {"id": str(qid), "question": question, "image": require_field(row, "image", where), "where": where}
        )
    return items


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    add_response_arguments(parser)
    parser.add_argument("--amber-dir", required=True, help="AMBER data folder (annotations.json, relation.json, ...)")
    parser.add_argument(
        "--extraction",
        choices=EXTRACTIONS,
        default="auto",
        help="amber-g nouns: reference (AMBER's inference.py exactly; needs the eval-reference extra and its data), "
        "vocab-match (offline approximation) or auto (reference when installed; recorded in the results)",
    )
    parser.add_argument(
        "--similarity",
        choices=("none", "spacy"),
        help="word-similarity backend for vocab-match (default none; reference always uses spaCy)",
    )


def score_command(args: argparse.Namespace) -> int:
    out = output_folder(args)
    similarity = build_similarity(args.similarity) if args.similarity else None
    result = score(args.responses, args.amber_dir, args.bench[-1], similarity, args.extraction)
    return write_outputs([result], out, args.strict)


# Generation answers both halves' query files into one amber.jsonl; AMBER mixes yes/no queries with "Describe this
# image." (its generative half), which needs room for a full description (yes/no answers stop at EOS anyway).
AMBER = Benchmark(
    name="amber",
    summary="AMBER query files (generative and yes/no), answered into one file",
    decoding=Decoding(num_beams=1, max_new_tokens=512),
    read_questions=read_questions,
)
AMBER_G = Benchmark(
    name="amber-g",
    summary="AMBER generative: CHAIR, Cover, Hal, Cog",
    add_arguments=add_score_arguments,
    score=score_command,
)
AMBER_D = Benchmark(
    name="amber-d",
    summary="AMBER discriminative: yes/no accuracy, F1",
    add_arguments=add_score_arguments,
    score=score_command,
)
