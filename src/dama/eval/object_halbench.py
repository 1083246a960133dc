"""Object HalBench (RLHF-V / RLAIF-V protocol) and plain COCO CHAIR scoring, in `rule` and `llm` extraction modes.

docs/eval.md, "Object HalBench": 300 COCO val2014 images with detailed-description prompts; ground truth per image
from the user's COCO 2014 annotations (`coco.py`); metrics are CHAIR's (`chair.chair_metrics`, Rohrbach et al. 2018);
`avg_len` is RLAIF-V's `len(text.strip().split(" "))`. For Object HalBench, answers are first cleaned as RLAIF-V
loads them: every "Assistant:" removed, then whitespace stripped.
- rule: the CHAIR engine on the raw response.
- llm (the protocol behind published Object HalBench numbers), as RLAIF-V's eval/eval_gpt_obj_halbench.py: a text
  judge gets RLAIF-V's extraction prompt as a system message and lists the objects as a JSON list (answers of ≤3
  words yield none, without a call). Each listed name is read as "a <name>" by a POS tagger: if any two-word COCO
  name (a bigram of the merge table) occurs, those names are kept and nothing else of that entry ("hot dog stand" ->
  hot dog); otherwise every maximal run of nouns (NN, NNS, NNP, NNPS), as lemmas ("a group of people" -> group,
  people -> person; "person riding a bike" -> person, bike -> bicycle). Names are de-duplicated per response, then
  the toilet/seat rule and the synonym mapping apply. The reference tagger is spaCy's `en_core_web_trf`
  (`--tagger spacy`, used by `auto` when installed); without it an offline approximation (`approx`) marks as nouns
  the words that are not closed-class, not common adjectives and not -ing/-ed/-ly forms (vocabulary words are
  always nouns). Which one ran is recorded as `extraction.reduction`; only `rlaif-v:spacy:en_core_web_trf` is the
  reference. Responses whose judge output is not a JSON list of strings are left out and counted
  (`n_judge_failures`, `partial: true`), never scored as "no objects".
Numbers from the two modes are written to separate files, each labelled with its mode, judge, prompt and reduction.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from dama.eval.benchmark import Benchmark, Decoding, UsageError, add_response_arguments, output_folder, write_outputs
from dama.eval.chair import (
    VERSIONS,
    ChairEngine,
    ChairItem,
    Mention,
    chair_metrics,
    is_word,
    reference_length,
    tokenize,
)
from dama.eval.coco import CocoGroundTruth, coco_image_id
from dama.eval.records import (
    RecordError,
    completeness,
    load_responses,
    match_ids,
    question_items,
    read_jsonl_lines,
    run_metadata,
)


class Judge(Protocol):
    """What llm mode needs of a judge (`dama.eval.judge.build_judge` returns one)."""

    judge_id: str

    def complete(self, prompt: str, role: str = "user") -> str: ...


# RLAIF-V's extraction prompt (eval/eval_gpt_obj_halbench.py, `prompt_template`), word for word; it is filled with
# str.replace ("{question}", then "{answer}") and sent as the only message, with role "system".
RLAIF_V_PROMPT = """You are an expert in image objects extraction according to a question answer pair. We asked an examiner to answer a question about a picture.

[Start of Question]

<image> {question}

[End of Question]

[Start of Examiner's Answer]

{answer}

[End of Examiner's Answer]


Assume that the answer is correct, please identify all visible objects that are directly shown in the image. Please following the instructions in below:

1. You should only mention objects that are explicitly mentioned in the examiner's answer.
2. You should only extract the object names without the attributes of the objects.
3. You should not include the properties of the object, like the color, material, etc. as part of the object name in your result.
4. Make your answer precise. Present the results in a JSON list format: [\"object_1\", ..., \"object_n\"].
5. You should return an empty JSON list () if no visible objects can be found.
"""  # noqa: E501

EXTRACTION_PROMPT = """You extract object names from an answer about an image.

Question: {question}

Answer: {answer}

List every physical object the answer says is visible in the image. Rules:
1. Only objects the answer explicitly mentions; do not add any.
2. Give object names only, without attributes (no colours, materials, sizes or counts).
3. Reply with a JSON list of strings and nothing else, for example ["dog", "frisbee", "tree"].
4. Reply [] if the answer mentions no visible object.
"""
# prompt name -> (template, message role); "rlaif-v" is the reference, "dama-v1" this project's earlier wording
PROMPTS = {"rlaif-v": (RLAIF_V_PROMPT, "system"), "dama-v1": (EXTRACTION_PROMPT, "user")}
PROMPT_SHA256 = {name: hashlib.sha256(template.encode()).hexdigest() for name, (template, _) in PROMPTS.items()}
MODES = ("rule", "llm")
NOUN_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS"})
REFERENCE_TAGGER_MODEL = "en_core_web_trf"


def fill_prompt(name: str, question: str, answer: str) -> tuple[str, str]:
    """(prompt text, message role) of prompt `name` for one question/answer pair."""
    template, role = PROMPTS[name]
    return template.replace("{question}", question).replace("{answer}", answer), role


class Tagger(Protocol):
    """Tokens of a text as (lemma, Penn Treebank tag) pairs."""

    name: str

    def tag(self, text: str) -> list[tuple[str, str]]: ...


class SpacyTagger:
    """RLAIF-V's tagger: spaCy `en_core_web_trf`, `token.lemma_` and `token.tag_`; needs spaCy and the model."""

    def __init__(self, model: str = REFERENCE_TAGGER_MODEL) -> None:
        try:
            import spacy

            self.nlp = spacy.load(model)
        except (ImportError, OSError) as err:
            raise RecordError(
                f"tagger 'spacy' needs spaCy and its {model} model installed "
                f"(pip install 'dama[eval-reference]' && python -m spacy download {model}): {err}"
            ) from err
        self.name = f"spacy:{model}"

    def tag(self, text: str) -> list[tuple[str, str]]:
        return [(token.lemma_, token.tag_) for token in self.nlp(text)]


# Words the offline approximation never calls nouns: closed-class words and common attributes.
_CLOSED_CLASS = frozenset(
    """a an the this that these those some any each every all both either neither no another other such
    of with on in at near under behind from for to by into onto over above below beside next between among around
    through across along against inside outside up down off out about as like than and or but nor so yet
    i you he she it we they me him her us them my your his its our their mine yours hers ours theirs
    is are was were be been being am do does did has have had can could will would shall should may might must
    not very too also just only there here what which who whom whose when where why how
    one two three four five six seven eight nine ten eleven twelve several many few more most much lot lots""".split()
)
_ATTRIBUTES = frozenset(
    """red orange yellow green blue purple pink brown black white gray grey silver golden gold beige dark light
    bright colorful large big small little tiny huge tall short long wide narrow thick thin round square flat
    old new young wooden metallic plastic glass leather paper full empty open closed clean dirty wet dry hot cold
    left right front back top bottom middle center side other various different same single double
    striped plaid""".split()
)
_VERB_LIKE = re.compile(r"(?:ing|ed|ly)$")


class ApproxTagger:
    """Offline stand-in for the reference tagger: CHAIR-table lemmas; a word is a noun ("NN") unless it is
    punctuation, closed-class, a common attribute or an -ing/-ed/-ly form, and every vocabulary word is a noun.
    Two-word names need no tags (`bigram_names` reads lemmas only), so "hot" in "hot dog" is not made a noun."""

    name = "approx"

    def __init__(self, engine: ChairEngine) -> None:
        self.engine = engine

    def tag(self, text: str) -> list[tuple[str, str]]:
        tagged = []
        for token in tokenize(text):
            lemma = self.engine.singular.get(token, token)
            if lemma in self.engine.inverse:
                noun = True
            elif not is_word(token) or token in _CLOSED_CLASS or token in _ATTRIBUTES:
                noun = False
            else:
                noun = not _VERB_LIKE.search(token)
            tagged.append((lemma, "NN" if noun else "X"))
        return tagged


def build_tagger(name: str, engine: ChairEngine) -> Tagger:
    """`spacy` (the reference; an error if not installed), `approx`, or `auto` (spacy when installed, else approx)."""
    if name == "spacy":
        return SpacyTagger()
    if name == "approx":
        return ApproxTagger(engine)
    if name == "auto":
        try:
            return SpacyTagger()
        except RecordError:
            return ApproxTagger(engine)
    raise ValueError(f"unknown tagger {name!r}; choose auto, spacy or approx")


def read_questions(path: str | Path) -> list[dict]:
    """Object HalBench question JSONL (`image_id`, `question`, `image` base64) as `{"id", "image_id", "question"}`.

    The id is `id`, else `question_id`, else `image_id` — the same key `dama eval generate` gives its responses.
    """
    items, seen = [], {}
    for number, row in read_jsonl_lines(path):
        where = f"{path}:{number}"
        key = next((row[k] for k in ("id", "question_id", "image_id") if row.get(k) not in (None, "")), None)
        if key is None:
            raise RecordError(f"{where}: question row has none of 'id', 'question_id', 'image_id'")
        if row.get("image_id") in (None, ""):
            raise RecordError(f"{where}: question row has no 'image_id' (needed for the COCO ground truth)")
        if str(key) in seen:
            raise RecordError(f"{where}: duplicate question id {str(key)!r} (first at {seen[str(key)]})")
        seen[str(key)] = where
        items.append({"id": str(key), "image_id": row["image_id"], "question": row.get("question", "")})
    return items


def parse_object_list(text: str) -> list[str] | None:
    """The JSON list of strings in a judge's reply (the first `[...]`), or None if there is none."""
    match = re.search(r"\[.*?\]", text, flags=re.DOTALL)
    if match is None:
        return None
    try:
        names = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return None
    return names


def bigram_names(engine: ChairEngine, lemmas: Sequence[str]) -> list[str]:
    """The merge-table names found scanning `lemmas` one bigram at a time (RLAIF-V's `get_double_words_only`)."""
    found, i = [], 0
    while i < len(lemmas):
        name = engine.multiword.get(tuple(lemmas[i : i + 2]))
        if name is not None:
            found.append(name)
            i += 2
        else:
            i += 1
    return found


def noun_runs(tagged: Sequence[tuple[str, str]]) -> list[str]:
    """Every maximal run of noun-tagged tokens, its lemmas joined by spaces (RLAIF-V's `postagging`)."""
    runs, current = [], []
    for lemma, tag in tagged:
        if tag in NOUN_TAGS:
            current.append(lemma)
        elif current:
            runs.append(" ".join(current))
            current = []
    if current:
        runs.append(" ".join(current))
    return runs


def reduce_names(engine: ChairEngine, names: Sequence[str], tagger: Tagger) -> list[str]:
    """Judge-listed names -> candidate object words, de-duplicated in order (RLAIF-V's `get_pred_objs_match`)."""
    refined: list[str] = []
    for name in names:
        tagged = tagger.tag(f"a {name}")
        doubles = bigram_names(engine, [lemma for lemma, _ in tagged])
        refined += doubles if doubles else noun_runs(tagged)
    return list(dict.fromkeys(refined))


def llm_mentions(engine: ChairEngine, names: Sequence[str], tagger: Tagger) -> list[Mention]:
    """Judge-listed names -> mentions: `reduce_names`, then the toilet/seat rule and the synonym map."""
    unique = reduce_names(engine, names, tagger)
    return engine.select([(word, position) for position, word in enumerate(unique)])


def score_responses(
    responses_path: str | Path,
    engine: ChairEngine,
    ground_truth: CocoGroundTruth,
    *,
    bench: str = "object-halbench",
    questions_path: str | Path | None = None,
    modes: Sequence[str] = ("rule",),
    judge: Judge | None = None,
    prompt: str = "rlaif-v",
    tagger: Tagger | None = None,
) -> list[tuple[str, dict, list[dict]]]:
    """Score one response file; returns `(file stem, result, per-response details)` for each mode.

    Without `questions_path` completeness cannot be checked: the result says `"completeness_checked": false`.
    llm mode uses `prompt` (a key of `PROMPTS`) and `tagger` (default: `build_tagger("auto", engine)`).
    """
    if prompt not in PROMPTS:
        raise ValueError(f"unknown extraction prompt {prompt!r}; choose from {', '.join(PROMPTS)}")
    if tagger is None and "llm" in modes:
        tagger = build_tagger("auto", engine)
    responses = load_responses(responses_path)
    if questions_path is not None:
        questions = read_questions(questions_path)
        by_id = {q["id"]: q for q in questions}
        present = match_ids([q["id"] for q in questions], responses, responses_path, str(questions_path))
        status = {**completeness(list(by_id), present), "completeness_checked": True}
    else:
        by_id = {}
        present = list(responses)
        status = {**completeness(present, present), "completeness_checked": False}
    image_ids = {}
    for key in present:
        row = responses[key]
        image_id = next(
            (v for v in (row.get("image_id"), by_id.get(key, {}).get("image_id")) if v not in (None, "")), key
        )
        image_ids[key] = str(coco_image_id(image_id))
    gt = ground_truth.classes(image_ids.values())
    meta = run_metadata([responses[k] for k in present], responses_path)

    outputs = []
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"unknown extraction mode {mode!r}; choose from {', '.join(MODES)}")
        if mode == "llm" and judge is None:
            raise ValueError("llm extraction mode needs a judge (--judge)")
        items, failures = [], []
        for key in tqdm(present, desc=f"{bench} {mode}", unit="response", leave=False):
            row = responses[key]
            text = row["response"]
            # RLAIF-V's load_generated_captions: answer.replace("Assistant:", "").strip()
            if bench == "object-halbench":
                text = text.replace("Assistant:", "").strip()
            if mode == "rule":
                mentions = engine.extract(text)
            elif len(text.split()) <= 3:
                mentions = []
            else:
                question = row.get("question") or by_id.get(key, {}).get("question", "")
                message, role = fill_prompt(prompt, question, text)
                reply = judge.complete(message) if role == "user" else judge.complete(message, role=role)
                names = parse_object_list(reply)
                if names is None:
                    failures.append(key)
                    continue
                mentions = llm_mentions(engine, names, tagger)
            items.append(ChairItem(key, mentions, gt[image_ids[key]], reference_length(text), image_ids[key]))
        extraction = {"mode": mode, "length": "rlaif-v: len(text.strip().split(' '))"}
        if bench == "object-halbench":
            extraction["answer_cleanup"] = "rlaif-v: remove 'Assistant:', strip"
        if mode == "llm":
            extraction.update(
                judge_id=judge.judge_id,
                prompt=prompt,
                prompt_role=PROMPTS[prompt][1],
                prompt_sha256=PROMPT_SHA256[prompt],
                reduction=f"rlaif-v:{tagger.name}",
                reference_reduction=tagger.name == f"spacy:{REFERENCE_TAGGER_MODEL}",
            )
        result = {
            "benchmark": bench,
            "split": "val2014" if bench == "object-halbench" else "coco2014",
            **meta,
            "extraction": extraction,
            # fingerprint: the synonym lines plus the singularisation/merge tables and rules actually applied
            "synonyms": {"version": engine.version, "sha256": engine.sha256, "fingerprint": engine.fingerprint},
            "annotations": ground_truth.describe(),
            "responses_file": str(responses_path),
            **status,
            "metrics": chair_metrics(items),
            "units": "percent (CHAIR_s, CHAIR_s_refined, CHAIR_i, recall); words (avg_len)",
        }
        if failures:
            result.update(partial=True, n_judge_failures=len(failures), judge_failure_ids=failures[:50])
            result["n_items"] = len(items)
        details = [item.detail() for item in items] + [{"id": key, "judge_failure": True} for key in failures]
        outputs.append((f"{bench}_{mode}", result, details))
    return outputs


# --- the benchmark records -----------------------------------------------------------------------------------------


def read_generation_questions(path: Path) -> list[dict]:
    """The question JSONL {image_id, question, image: base64} as generation items, images decoded from base64 now, so
    a bad value fails before the model loads (the field is always base64 here, however short)."""
    items = question_items(path, ("id", "question_id", "image_id"), "question", "image")
    for item in items:
        try:
            item["image"] = {"bytes": base64.b64decode(item["image"], validate=True)}
        except (binascii.Error, TypeError, ValueError) as err:
            raise RecordError(f"{item['where']}: field 'image' is not base64 ({err})") from err
    return items


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    add_response_arguments(parser)
    parser.add_argument(
        "--coco-annotations", required=True, help="folder with instances_val2014.json + captions_val2014.json"
    )
    parser.add_argument(
        "--questions", help="Object HalBench question JSONL; needed to detect missing responses (partial results)"
    )
    parser.add_argument("--mode", choices=("rule", "llm", "both"), default="rule", help="object extraction mode")
    parser.add_argument("--judge", help="llm mode: openai:MODEL[@BASE_URL], hf:/path/to/causal-lm or fake[:SEED]")
    parser.add_argument("--judge-cache", help="llm mode: judge cache folder (default: judge_cache/ next to --out)")
    parser.add_argument(
        "--prompt",
        choices=tuple(PROMPTS),
        default="rlaif-v",
        help="llm mode: extraction prompt; rlaif-v (default, RLAIF-V's, as a system message) or dama-v1",
    )
    parser.add_argument(
        "--tagger",
        choices=("auto", "spacy", "approx"),
        default="auto",
        help="llm mode: POS tagger for reducing listed names; spacy (en_core_web_trf, the reference), approx "
        "(offline approximation) or auto (spacy when installed, else approx; recorded in the results)",
    )
    parser.add_argument(
        "--synonyms",
        default="chair-refined-v1",
        help="chair-refined-v1 (default), chair-original, or a file of 'class, synonym, ...' lines",
    )
    parser.add_argument("--cache-dir", help="ground-truth cache folder (default: ~/.cache/dama/coco)")


def chair_engine(spec: str) -> ChairEngine:
    """The engine of `--synonyms`: a shipped list by name, or a file of synonym lines."""
    if spec in VERSIONS:
        return ChairEngine(version=spec)
    path = Path(spec)
    if not path.is_file():
        raise RecordError(f"--synonyms {spec!r}: neither {', '.join(VERSIONS)} nor a file")
    return ChairEngine(synonym_lines=path.read_text(encoding="utf-8").splitlines())


def score_command(args: argparse.Namespace) -> int:
    """`dama eval score --bench chair|object-halbench`: one results file per extraction mode."""
    out = output_folder(args)
    modes = ("rule", "llm") if args.mode == "both" else (args.mode,)
    if "llm" in modes and not args.judge:
        raise UsageError("--mode llm/both needs --judge")
    from dama.eval.judge import build_judge  # standard library only: cheap to import
    from dama.llm import LLMError

    try:
        judge = build_judge(args.judge, args.judge_cache or str(out / "judge_cache")) if "llm" in modes else None
        engine = chair_engine(args.synonyms)
        ground_truth = CocoGroundTruth(args.coco_annotations, engine, args.cache_dir)
        outputs = score_responses(
            args.responses,
            engine,
            ground_truth,
            bench=args.bench,
            questions_path=args.questions,
            modes=modes,
            judge=judge,
            prompt=args.prompt,
            tagger=build_tagger(args.tagger, engine) if "llm" in modes else None,
        )
    except LLMError as err:  # a judge that cannot answer (bad spec, endpoint down): a message, not a traceback
        raise RecordError(f"judge {args.judge!r}: {err}") from err
    return write_outputs(outputs, out, args.strict)


# RLHF-V/RLAIF-V protocol: temperature 0, 3 beams, 1024 tokens.
OBJECT_HALBENCH = Benchmark(
    name="object-halbench",
    summary="Object HalBench: CHAIR on 300 COCO val2014 descriptions (rule or llm extraction)",
    decoding=Decoding(num_beams=3, max_new_tokens=1024),
    read_questions=read_generation_questions,
    add_arguments=add_score_arguments,
    score=score_command,
)
CHAIR = Benchmark(
    name="chair",
    summary="CHAIR on any COCO 2014 captions (rule or llm extraction)",
    add_arguments=add_score_arguments,
    score=score_command,
)
