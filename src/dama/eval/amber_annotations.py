"""AMBER's annotation files, read and checked, and its per-response matching rules.

AMBER (Wang et al., "AMBER: An LLM-free Multi-dimensional Benchmark for MLLMs Hallucination Evaluation", 2023).
Files, read from `--amber-dir` (annotations Apache-2.0): `annotations.json` (a list of `{id, type, truth, hallu}`),
`relation.json` (object -> associated words), `safe_words.txt` (words always ignored). `Amber` holds them with the
vocabulary, the offline `vocab-match` noun extractor (`Amber.nouns`), and the matching of one response's nouns
against its truth and hallu objects: `generative_item` (vocab-match) and `reference_item` (AMBER's inference.py
generative loop, transcribed). The metrics over these per-response records are in `amber_metrics.py`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from dama.eval.amber_nlp import NoSimilarity, Similarity
from dama.eval.chair import is_word, tokenize
from dama.eval.plurals import lemma_table
from dama.eval.records import RecordError, read_json, read_text

# vocab-match: "can" is a modal, not an object, unless followed by one of these (or by punctuation / the end):
# "a can of soda", "the can is", "a soda can next to ..."
_NOUN_CAN_FOLLOWERS = frozenset(
    """of on in at with next near by from to for behind under beside and or is are was were has have had
    sits sitting stands standing lies lying placed filled that which""".split()
)


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
        safe_text = read_text(safe_path)
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
