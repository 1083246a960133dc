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

The parts: `amber_annotations.py` (the files and the per-response matching), `amber_nlp.py` (the reference's NLTK
tagger and spaCy similarity), `amber_metrics.py` (the metrics). This module holds the scoring of a response file
(`score`), the options and the benchmark records.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from dama.eval.amber_annotations import Amber
from dama.eval.amber_metrics import (
    DENOMINATOR_START,
    DENOMINATOR_START_DEFAULT,
    DISCRIMINATIVE_TYPES,
    F1_EPSILON,
    F1_EPSILON_DEFAULT,
    discriminative_metrics,
    generative_metrics,
    normalize_yes_no,
)
from dama.eval.amber_metrics import amber_score as amber_score  # documented as dama.eval.amber.amber_score
from dama.eval.amber_nlp import NoSimilarity, Similarity, SpacySimilarity, build_similarity, nltk_nouns
from dama.eval.benchmark import Benchmark, Decoding, add_response_arguments, output_folder, write_outputs
from dama.eval.records import (
    RecordError,
    completeness,
    load_responses,
    match_ids,
    read_json,
    require_field,
    run_metadata,
)

EXTRACTIONS = ("auto", "reference", "vocab-match")


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
    texts = {k: responses[k]["response"] for k in present}
    if kind == "g":
        return score_generative(amber, texts, common, similarity, extraction, nouns)
    return score_discriminative(amber, texts, common)


def score_generative(
    amber: Amber,
    texts: dict[str, str],
    common: dict,
    similarity: Similarity | None = None,
    extraction: str = "vocab-match",
    nouns: Callable[[str], list[str]] | None = None,
) -> tuple[str, dict, list[dict]]:
    """The generative half (CHAIR, Cover, Hal, Cog) of the responses `texts` (id → text); see `score`."""
    if extraction not in EXTRACTIONS:
        raise ValueError(f"unknown AMBER extraction {extraction!r}; choose from {', '.join(EXTRACTIONS)}")
    if extraction == "auto":
        try:
            nouns, similarity = nouns or nltk_nouns(), similarity or SpacySimilarity()
            extraction = "reference"
        except RecordError:
            extraction = "vocab-match"
    progress = {"desc": "AMBER generative", "unit": "response", "leave": False}
    if extraction == "reference":
        nouns, similarity = nouns or nltk_nouns(), similarity or SpacySimilarity()
        details = [amber.reference_item(k, text, nouns, similarity) for k, text in tqdm(texts.items(), **progress)]
        settings = {
            "noun_extraction": "reference",
            "tagger": getattr(nouns, "name", "custom"),
            "similarity": similarity.name,
            "reference_exact": getattr(nouns, "name", "").startswith("nltk")
            and similarity.name == "spacy:en_core_web_lg>0.8",
        }
    else:
        similarity = similarity or NoSimilarity()
        details = [amber.generative_item(k, text, similarity) for k, text in tqdm(texts.items(), **progress)]
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


def score_discriminative(amber: Amber, texts: dict[str, str], common: dict) -> tuple[str, dict, list[dict]]:
    """The discriminative half (accuracy, precision, recall, F1 per dimension) of `texts` (id → answer)."""
    details, by_type, fallbacks, not_exact = [], {}, 0, 0
    for key, text in texts.items():
        item = amber.items[key]
        if item["type"] not in DISCRIMINATIVE_TYPES:
            raise RecordError(
                f"{amber.dir / 'annotations.json'}: id {key} has unknown type {item['type']!r} "
                f"(expected one of {', '.join(sorted(DISCRIMINATIVE_TYPES))})"
            )
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
