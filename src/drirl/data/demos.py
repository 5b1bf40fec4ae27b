"""Teacher-written Chain-of-Draft demonstrations (METHOD.md §2.2), resumable.

For every example without a demonstration, the teacher (a local transformers model, or an OpenAI-compatible
endpoint) is prompted with its category's template (``templates/<category>.txt``, editable; ``{prompt}`` is
replaced by the request). Every reply, harmful or benign, is normalised to ``"Draft: ...\\nAnswer: ..."`` (the form
carries no decision) and filtered, each rejection counted by reason:

* the answer is cut where the teacher echoes its template (a second ``Answer:``, ``Request:``, ``Response:``, the
  template's own lines); a reply that is only an echo is rejected (``echoed template``);
* a draft must be present (``no draft``), and an answer (``no answer``);
* looping text is rejected: a share of repeated word n-grams above ``max_repeated_ngram_share`` (``looping text``);
* the answer must refuse (harmful; ``no refusal``) or must not refuse (benign; ``refusal of a benign prompt``, and
  ``refusing draft of a benign prompt`` when its draft decides to refuse);
* the length must lie within word bounds (``too short``, ``too long``);
* the answer must be about the request: the cosine of the prompt's and the answer's embeddings (the bundled MiniLM
  by default) must reach ``min_relevance`` (``off topic``).

Accepted examples go to the output JSONL, rejected ones with their reason and detail to ``<output>.rejected.jsonl``.

Both files are append-only, each line flushed and fsynced as it is written, so a killed run loses at most the
batch in flight; on restart every id already in either file is skipped (no duplicates). A truncated last line
left by a kill is repaired. This is the one output of drirl that is not written atomically.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from drirl.config import config_to_dict, help_field
from drirl.data.schema import BENIGN, Example, Taxonomy, card_path, default_taxonomy, load_taxonomy, read_examples
from drirl.errors import ConfigError, DataError
from drirl.io import atomic_write_json, read_text

logger = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).parent / "templates"
DEFAULT_TEMPLATE = "default"  # used for a category of a user taxonomy that has no template of its own
REJECTED_SUFFIX = ".rejected.jsonl"

_APOSTROPHE = "['\u2019]"
# A refusal names the assistant as the one declining ("I can't ...", "I won't ..."), or uses a stock phrase.
REFUSAL_PATTERN = re.compile(
    r"\bI(?:\s+am|" + _APOSTROPHE + r"m)?\s+(?:"
    r"can" + _APOSTROPHE + r"?t|cannot|can\s+not|won" + _APOSTROPHE + r"?t|will\s+not|"
    r"(?:am\s+|" + _APOSTROPHE + r"m\s+)?(?:not\s+able|unable)\s+to|"
    r"(?:must|have\s+to|need\s+to|have\s+got\s+to)\s+decline|decline|refuse|"
    r"(?:am\s+|" + _APOSTROPHE + r"m\s+)?not\s+(?:going|willing)\s+to|"
    r"do(?:n" + _APOSTROPHE + r"?t|\s+not)\s+(?:feel\s+comfortable|help|assist|provide|write|share|support)|"
    r"should(?:n" + _APOSTROPHE + r"?t|\s+not)\s+help|"
    r"would\s+rather\s+not)\b"
    r"|\bI" + _APOSTROPHE + r"d\s+rather\s+not\b"
    r"|\bI" + _APOSTROPHE + r"m\s+not\s+(?:able|going|willing)\s+to\b"
    r"|\b(?:I\s+am|I" + _APOSTROPHE + r"m)\s+sorry,?\s+but\b"
    r"|\bI\s+apologi[sz]e,?\s+but\b"
    r"|\bnot\s+something\s+I\s+(?:can|will)\b"
    r"|\b(?:can" + _APOSTROPHE + r"?t|cannot|won" + _APOSTROPHE + r"?t|will\s+not)\s+(?:help|assist)\s+with\b",
    re.IGNORECASE,
)
_DRAFT = re.compile(r"draft\s*:", re.IGNORECASE)
_ANSWER = re.compile(r"answer\s*:", re.IGNORECASE)
_DECORATION = " \t\r\n*_#`>-"
# A draft step that is the decision to refuse ("refuse", "decline politely"); "decline meeting" is a topic, not one.
_REFUSING_STEP = re.compile(r"^(?:refus|declin)\w*(?:\s+(?:politely|firmly|gently|to\s+help|(?:the\s+)?request))?$",
                            re.IGNORECASE)


def is_refusal(text: str) -> bool:
    """Whether ``text`` refuses (a small phrase-level regex, enough to filter teacher output)."""
    return bool(REFUSAL_PATTERN.search(text or ""))


# --------------------------------------------------------------------------------------------- config/report
@dataclass
class DemosConfig:
    input: str | None = field(default=None, metadata=help_field("Example file (JSONL or datasets folder) whose "
                                                                "missing demonstrations are filled.", required=True))
    output: str | None = field(default=None, metadata=help_field("Output JSONL, append-only and resumable: ids "
                                                                 "already in it are skipped.", required=True))
    teacher: str = field(default="smollm2-135m-instruct",
                         metadata=help_field("Local teacher model: a folder, a hub id or a bundled alias (used "
                                             "when endpoint_url is not set)."))
    endpoint_url: str | None = field(default=None, metadata=help_field("Base URL of an OpenAI-compatible API "
                                                                       "(e.g. http://localhost:8000/v1); "
                                                                       "replaces the local teacher."))
    endpoint_model: str | None = field(default=None, metadata=help_field("Model name the endpoint serves "
                                                                         "(default: the teacher value)."))
    api_key_env: str = field(default="OPENAI_API_KEY", metadata=help_field("Environment variable holding the "
                                                                           "endpoint's API key (never logged)."))
    templates_dir: str | None = field(default=None, metadata=help_field("Folder of <category>.txt templates "
                                                                        "with a {prompt} placeholder; missing ones "
                                                                        "fall back to the bundled templates."))
    taxonomy: str | None = field(default=None, metadata=help_field("Taxonomy YAML (default: the bundled one)."))
    batch_size: int = field(default=8, metadata=help_field("Prompts per generate() call (local) or concurrent "
                                                           "requests (endpoint)."))
    max_new_tokens: int = field(default=96, metadata=help_field("Maximum tokens per demonstration."))
    do_sample: bool = field(default=False, metadata=help_field("Sample instead of greedy decoding."))
    temperature: float = field(default=0.7, metadata=help_field("Sampling temperature (when do_sample)."))
    min_words: int = field(default=5, metadata=help_field("Reject demonstrations shorter than this many words."))
    max_words: int = field(default=120, metadata=help_field("Reject demonstrations longer than this many words."))
    loop_ngram: int = field(default=3, metadata=help_field("Size n of the word n-grams counted by the loop check."))
    max_repeated_ngram_share: float = field(
        default=0.3, metadata=help_field("Reject a reply whose share of repeated word n-grams (1 - distinct/total) is "
                                         "above this: looping text such as \"portal's portal's portal's\". The "
                                         "bundled demonstrations reach at most 0.08 (n = 3); 1 turns the check off."))
    relevance_encoder: str = field(default="minilm", metadata=help_field(
        "Sentence-transformers model whose embeddings measure whether an answer is about its request (a folder, "
        "an id, or the bundled alias 'minilm')."))
    min_relevance: float | None = field(default=0.2, metadata=help_field(
        "Reject an answer whose cosine similarity with its prompt (relevance_encoder embeddings) is below this. On "
        "the bundled set with minilm, 6 of 734 demonstrations fall below 0.2 and 7% of pairs of a prompt with "
        "another prompt's answer reach it. null turns the check off (no encoder is loaded)."))
    seed: int = field(default=0, metadata=help_field("Seed of the sampling."))
    limit: int | None = field(default=None, metadata=help_field("Generate at most this many demonstrations in this "
                                                                "run (the rest on a later run)."))
    regenerate: bool = field(default=False, metadata=help_field("Also replace demonstrations the input already "
                                                                "has (default: copy them through)."))
    retry_rejected: bool = field(default=False, metadata=help_field("Try again the ids already in the rejected "
                                                                    "file (default: skip them on resume)."))
    device: str = field(default="auto", metadata=help_field("Device of the local teacher: auto (cuda when "
                                                            "available), cpu, cuda, cuda:1 ..."))
    timeout: float = field(default=60.0, metadata=help_field("Seconds before one endpoint request is abandoned."))
    max_retries: int = field(default=3, metadata=help_field("Retries of a failed endpoint request."))
    retry_backoff: float = field(default=1.0, metadata=help_field("First retry delay in seconds; doubles each "
                                                                  "retry."))
    progress: bool = field(default=True, metadata=help_field("Show a progress bar."))

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_new_tokens", "min_words", "max_words", "loop_ngram"):
            if getattr(self, name) < 1:
                raise ConfigError("must be at least 1", key=name)
        if self.min_words > self.max_words:
            raise ConfigError("must not exceed max_words", key="min_words")
        if self.limit is not None and self.limit < 0:
            raise ConfigError("must not be negative", key="limit")
        if not 0.0 <= self.max_repeated_ngram_share <= 1.0:
            raise ConfigError("must lie in [0, 1] (1 turns the loop check off)", key="max_repeated_ngram_share")
        if self.min_relevance is not None and not -1.0 <= self.min_relevance <= 1.0:
            raise ConfigError("a cosine similarity lies in [-1, 1] (null turns the check off)", key="min_relevance")


@dataclass
class DemosReport:
    input: str
    output: str
    rejected_path: str
    total: int = 0
    already_done: int = 0
    copied: int = 0
    generated: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    cut: dict[str, int] = field(default_factory=dict)
    remaining: int = 0
    empty_categories: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "output": self.output, "rejected_path": self.rejected_path,
                "total": self.total, "already_done": self.already_done, "copied": self.copied,
                "generated": self.generated, "accepted": self.accepted, "rejected": dict(self.rejected),
                "cut": dict(self.cut), "remaining": self.remaining, "empty_categories": list(self.empty_categories)}

    def summary(self) -> str:
        rejected = sum(self.rejected.values())
        reasons = ", ".join(f"{r}: {n}" for r, n in sorted(self.rejected.items(), key=lambda kv: -kv[1]))
        cuts = ", ".join(f"{r}: {n}" for r, n in sorted(self.cut.items(), key=lambda kv: -kv[1]))
        return (f"{self.total} example(s) in {self.input}: {self.already_done} already done, {self.copied} copied "
                f"with their demonstration, {self.generated} generated -> {self.accepted} accepted"
                f"{f' (cut: {cuts})' if cuts else ''}, {rejected} "
                f"rejected{f' ({reasons})' if reasons else ''}; {self.remaining} left for a later run.\n"
                + (f"warning: no demonstration left for {', '.join(self.empty_categories)} (every one rejected: see "
                   "the rejected file, change the template or the teacher)\n" if self.empty_categories else "")
                + f"output: {self.output}\nrejected: {self.rejected_path}")


# --------------------------------------------------------------------------------------------- templates
def load_templates(templates_dir: str | os.PathLike | None = None,
                   taxonomy: Taxonomy | None = None) -> dict[str, str]:
    """Category -> template text; a user folder wins over the bundled templates, ``default.txt`` fills gaps."""
    taxonomy = taxonomy or default_taxonomy()
    folders = [Path(templates_dir)] if templates_dir else []
    if templates_dir and not folders[0].is_dir():
        raise ConfigError("templates folder not found", key="templates_dir", file=str(templates_dir))
    folders.append(TEMPLATES_DIR)
    templates: dict[str, str] = {}
    for category in taxonomy.all_ids:
        for name in (category, DEFAULT_TEMPLATE if category != BENIGN else BENIGN):
            path = next((f / f"{name}.txt" for f in folders if (f / f"{name}.txt").is_file()), None)
            if path is not None:
                break
        if path is None:
            raise ConfigError(f"no template for category {category!r}", key="templates_dir")
        text = read_text(path)
        if "{prompt}" not in text:
            raise ConfigError("a template must contain the placeholder {prompt}", file=str(path))
        templates[category] = text
    return templates


def render_template(template: str, example: Example, taxonomy: Taxonomy | None = None) -> str:
    """Fill ``{prompt}``, ``{category}``, ``{category_name}``, ``{category_description}``. Plain replacement,
    not str.format, so templates may contain other braces (JSON examples)."""
    category = (taxonomy or default_taxonomy()).get(example.category)
    text = template.replace("{category_name}", category.name)
    text = text.replace("{category_description}", category.description).replace("{category}", category.id)
    return text.replace("{prompt}", example.prompt_text().strip()).strip()


# --------------------------------------------------------------------------------------------- filtering
def _refusing_draft(draft: str) -> bool:
    # A benign draft whose steps decide to refuse contradicts a helpful answer: the pair teaches nothing coherent.
    return any(_REFUSING_STEP.match(step.strip()) for step in draft.split("->"))


# Labels a teacher may echo after its answer: a second "Answer:", a "Request:" or "Draft:" anywhere (and
# "Response:", which small instruction models add on their own), and the template's headings at a line start.
_ECHO_LABEL = re.compile(r"\b(?:request|response|draft|answer)\s*:", re.IGNORECASE)
_ECHO_HEADING = re.compile(r"^[ \t*_#>-]*(?:rules|example|category)\s*:", re.IGNORECASE | re.MULTILINE)
_MIN_ECHO_LINE = 20  # shorter template lines ("Rules:") are too common to be evidence of an echo
_WORD = re.compile(r"\w+(?:['\u2019]\w+)*")


def _template_lines(template: str) -> list[str]:
    """The template's own sentences worth detecting in a reply: no placeholder, at least _MIN_ECHO_LINE characters,
    without a leading ``Draft:``/``Answer:`` label. Sentences rather than lines, because a teacher often rewrites
    the first sentence of the template's example answer and copies the rest."""
    pieces = []
    for line in template.splitlines():
        line = " ".join(line.split()).strip(_DECORATION)
        line = re.sub(r"^(?:draft|answer)\s*:\s*", "", line, flags=re.IGNORECASE)
        for sentence in re.split(r"(?<=[.!?])\s+", line):
            if len(sentence) >= _MIN_ECHO_LINE and "{" not in sentence:
                pieces.append(sentence)
    return pieces


def _plain(text: str) -> str:
    return " ".join("".join(c if c.isalnum() else " " for c in text.lower()).split())


def _flatten(text: str) -> tuple[str, list[int]]:
    """``text`` with every whitespace run made one space, and the index in ``text`` of each kept character."""
    chars: list[str] = []
    where: list[int] = []
    for i, char in enumerate(text):
        if char.isspace():
            if chars and chars[-1] == " ":
                continue
            char = " "
        chars.append(char)
        where.append(i)
    return "".join(chars), where


def cut_echoed_template(answer: str, template: str | None = None) -> tuple[str, str | None]:
    """Cut ``answer`` where the teacher starts repeating its prompt: a ``Request:``/``Response:``/``Draft:``/``Answer:``
    label, a ``Rules:``/``Example:``/``Category:`` heading at a line start, or any line of ``template`` itself.
    Returns the kept text and what was found (None when nothing was cut)."""
    cuts: list[tuple[int, str]] = []
    for pattern in (_ECHO_LABEL, _ECHO_HEADING):
        match = pattern.search(answer)
        if match:
            cuts.append((match.start(), "'" + match.group(0).strip(_DECORATION) + "'"))
    if template:
        flat, where = _flatten(answer)
        for line in _template_lines(template):
            at = flat.find(line)
            if at >= 0:
                cuts.append((where[at], f"template line {line[:40]!r}"))
    if not cuts:
        return answer, None
    at, what = min(cuts)
    return answer[:at].strip(_DECORATION), what


def repeated_ngram_share(text: str, n: int = 3) -> float:
    """Share of repeated word n-grams, r = 1 − |distinct n-grams| / |n-grams| (0 for fewer than two n-grams).

    Words are lower-cased runs of letters and digits (apostrophes inside kept). Looping text repeats its n-grams:
    "a b a b a b" has the 2-grams ab, ba, ab, ba, ab, so r = 1 − 2/5 = 0.6; ordinary prose stays near 0.
    """
    words = _WORD.findall(text.lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if len(grams) < 2:
        return 0.0
    return 1.0 - len(set(grams)) / len(grams)


def cosine_similarity(a: Any, b: Any) -> float:
    """cos(a, b) = a·b / (‖a‖ ‖b‖); 0 when either vector is zero."""
    dot = sum(float(x) * float(y) for x, y in zip(a, b, strict=True))
    norm_a = sum(float(x) ** 2 for x in a) ** 0.5
    norm_b = sum(float(y) ** 2 for y in b) ** 0.5
    return dot / (norm_a * norm_b) if norm_a and norm_b else 0.0


def normalize_demonstration(text: str, category: str, *, min_words: int = 5, max_words: int = 120,
                            template: str | None = None, prompt: str | None = None, loop_ngram: int = 3,
                            max_repeated_ngram_share: float = 0.3) -> tuple[str | None, str | None, str]:
    """Return ``(demonstration, None, detail)`` if the teacher's reply passes the filters (``detail`` says what was
    cut from the answer, "" when nothing), else ``(None, reason, detail)``.

    Every reply, harmful or benign, is reshaped to ``"Draft: <steps>\\nAnswer: <answer>"`` (METHOD.md §2.2): the
    same form on both sides, so that only the content of the draft and answer carries the decision. The answer is
    cut where the teacher echoes its template (:func:`cut_echoed_template`); a reply that copies the template's
    example, whose draft or answer only repeats ``prompt``, or that loops (:func:`repeated_ngram_share` above
    ``max_repeated_ngram_share``) is rejected. A harmful answer must refuse; a benign answer must not, and its draft
    must not decide to refuse."""
    text = (text or "").strip()
    if not text.strip(_DECORATION):
        return None, "empty", ""
    draft_match = _DRAFT.search(text)
    if not draft_match:
        return None, "no draft", "no 'Draft:' in the reply"
    rest = text[draft_match.end():]
    answer_match = _ANSWER.search(rest)
    if answer_match:
        draft, answer = rest[:answer_match.start()], rest[answer_match.end():]
    else:  # no "Answer:" label: the draft is its first line, the answer what follows
        draft, _, answer = rest.strip().partition("\n")
    draft = " ".join(draft.split()).strip(_DECORATION)
    answer, echoed = cut_echoed_template(answer.strip(_DECORATION), template)
    if not draft:
        return None, "no draft", "empty 'Draft:'"
    if not re.search(r"\w", answer):
        answer = ""  # stray quotes or punctuation left before an echo are no answer
    if _ECHO_LABEL.search(draft):
        return None, "echoed template", f"the draft holds a template label: {draft[:60]!r}"
    if template and len(_plain(draft)) >= _MIN_ECHO_LINE and _plain(draft) in _plain(template):
        return None, "echoed template", f"the draft is the template's own example: {draft!r}"
    if prompt and _plain(prompt) and _plain(prompt) in _plain(draft):
        return None, "echoed template", "the draft repeats the request instead of reasoning about it"
    if prompt and answer and _plain(answer) in _plain(prompt):
        return None, "echoed template", "the answer only repeats (part of) the request"
    if not answer:
        if echoed:  # the whole answer was a copy of the template
            return None, "echoed template", f"the answer starts with an echoed {echoed}"
        return None, "no answer", "nothing after the draft"
    loop = repeated_ngram_share(f"{draft} {answer}", loop_ngram)
    if loop > max_repeated_ngram_share:
        return None, "looping text", f"repeated {loop_ngram}-gram share {loop:.2f} > {max_repeated_ngram_share:g}"
    if category == BENIGN:
        if is_refusal(answer):
            return None, "refusal of a benign prompt", REFUSAL_PATTERN.search(answer).group(0)
        if _refusing_draft(draft):
            return None, "refusing draft of a benign prompt", f"the draft decides to refuse: {draft}"
    elif not is_refusal(answer):
        return None, "no refusal", "the answer does not refuse"
    demonstration = f"Draft: {draft}\nAnswer: {answer}"
    words = len(demonstration.split())
    if words < min_words:
        return None, "too short", f"{words} words < {min_words}"
    if words > max_words:
        return None, "too long", f"{words} words > {max_words}"
    return demonstration, None, f"cut at echoed {echoed}" if echoed else ""


def answer_of(demonstration: str) -> str:
    """The answer part of a ``"Draft: ...\\nAnswer: ..."`` demonstration (the whole text without that shape)."""
    match = _ANSWER.search(demonstration)
    return demonstration[match.end():].strip() if match else demonstration.strip()


Encoder = Callable[[list[str]], Any]
"""Texts -> one embedding vector per text (a 2-D array or a list of lists), e.g. a sentence-transformers encode."""


def relevance_scores(encoder: Encoder, prompts: list[str], answers: list[str]) -> list[float]:
    """cos(Φ(prompt), Φ(answer)) per pair, Φ the encoder: how much each answer is about its request."""
    if not prompts:
        return []
    vectors = list(encoder([*prompts, *answers]))
    if len(vectors) != 2 * len(prompts):
        raise ConfigError(f"the relevance encoder returned {len(vectors)} vectors for {2 * len(prompts)} texts",
                          key="relevance_encoder")
    return [cosine_similarity(vectors[i], vectors[len(prompts) + i]) for i in range(len(prompts))]


def _load_encoder(config: DemosConfig) -> Encoder:
    from drirl.models import load_text_encoder

    model = load_text_encoder(config.relevance_encoder)

    def encode(texts: list[str]) -> Any:
        return model.encode(texts, batch_size=32, show_progress_bar=False, convert_to_numpy=True)

    return encode


# --------------------------------------------------------------------------------------------- teachers
Teacher = Callable[[list[str]], list["str | Exception"]]


def _local_teacher(config: DemosConfig) -> Teacher:
    import torch

    from drirl.generation import GenerationSettings, generate
    from drirl.models import load_policy

    model, tokenizer = load_policy(config.teacher)
    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    settings = GenerationSettings(max_new_tokens=config.max_new_tokens, do_sample=config.do_sample,
                                  temperature=config.temperature, batch_size=config.batch_size, seed=config.seed)

    def teach(prompts: list[str]) -> list[str | Exception]:
        return [out[0] if out else "" for out in generate(model, tokenizer, prompts, settings, progress=False)]

    return teach


def _endpoint_teacher(config: DemosConfig) -> Teacher:
    from drirl.endpoint import ChatEndpoint, EndpointError

    endpoint = ChatEndpoint(base_url=config.endpoint_url or "", model=config.endpoint_model or config.teacher,
                            api_key_env=config.api_key_env, timeout=config.timeout, max_retries=config.max_retries,
                            backoff=config.retry_backoff)
    extra = {"seed": config.seed} if config.do_sample else {}

    def one(prompt: str) -> str | Exception:
        try:
            return endpoint.chat([{"role": "user", "content": prompt}], max_tokens=config.max_new_tokens,
                                 temperature=config.temperature if config.do_sample else 0.0, **extra)
        except EndpointError as err:
            return err

    def teach(prompts: list[str]) -> list[str | Exception]:
        with ThreadPoolExecutor(max_workers=max(1, min(config.batch_size, len(prompts)))) as pool:
            return list(pool.map(one, prompts))

    return teach


# --------------------------------------------------------------------------------------------- resumable files
def _done_ids(path: Path, *, repair: bool) -> set[str]:
    """Ids in an append-only JSONL; a truncated last line (a killed run) is cut off when ``repair``."""
    if not path.exists():
        return set()
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        cut = raw.rfind(b"\n") + 1
        tail = raw[cut:]
        try:
            json.loads(tail.decode("utf-8"))
            complete = True
        except (ValueError, UnicodeDecodeError):
            complete = False
        if repair:
            with open(path, "r+b") as handle:
                if complete:  # a whole record that only lacks its newline
                    handle.seek(0, os.SEEK_END)
                    handle.write(b"\n")
                else:
                    logger.warning("%s: dropping a truncated last line left by an interrupted run", path)
                    handle.truncate(cut)
                handle.flush()
                os.fsync(handle.fileno())
            raw = path.read_bytes()
        elif not complete:
            raw = raw[:cut]
    ids: set[str] = set()
    for number, line in enumerate(raw.decode("utf-8", errors="replace").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            ids.add(str(row["id"]))
        except (ValueError, KeyError, TypeError):
            raise DataError("malformed line in a resumable output (not written by drirl data demos?)",
                            file=str(path), line=number) from None
    return ids


def _emptied_categories(examples: list[Example], output: Path, rejected_path: Path) -> list[str]:
    """Categories of the input with no example in the output although none is left to generate: the filter
    rejected them all."""
    kept: set[str] = set()
    for line in output.read_text(encoding="utf-8").splitlines():
        if line.strip():
            kept.add(str(json.loads(line).get("category")))
    finished = _done_ids(output, repair=False) | _done_ids(rejected_path, repair=False)
    emptied = []
    for category in dict.fromkeys(e.category for e in examples):
        members = [e for e in examples if e.category == category]
        if category not in kept and all(e.id in finished for e in members):
            emptied.append(category)
    return emptied


def _append(handle: Any, row: dict[str, Any]) -> None:
    # One line per record, flushed and fsynced: a kill loses at most the line being written (repaired on resume).
    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


# --------------------------------------------------------------------------------------------- the stage
def generate_demonstrations(config: DemosConfig, *, teacher: Teacher | None = None,
                            encoder: Encoder | None = None) -> DemosReport:
    """Fill the missing demonstrations of ``config.input`` into ``config.output``; see the module docstring.

    ``teacher`` (a function from prompts to replies) replaces the configured teacher, for tests and custom models;
    ``encoder`` (texts to embedding vectors) replaces ``config.relevance_encoder`` in the relevance check. Each
    rejection reason is counted in the report and the output's card (``report.rejected``), and each answer cut at
    an echoed template in ``report.cut``.
    """
    from tqdm.auto import tqdm

    if not config.input or not config.output:
        raise ConfigError("missing required field", key="input" if not config.input else "output")
    output = Path(config.output)
    if output.suffix.lower() != ".jsonl":
        raise ConfigError("the demonstrations output must be a .jsonl file (it is appended to)", key="output")
    if Path(config.input).resolve() == output.resolve():
        raise ConfigError("output must differ from input (the output is appended to)", key="output")
    rejected_path = output.with_name(output.stem + REJECTED_SUFFIX)
    taxonomy = load_taxonomy(config.taxonomy) if config.taxonomy else default_taxonomy()
    templates = load_templates(config.templates_dir, taxonomy)
    examples = read_examples(config.input, taxonomy=taxonomy)
    done = _done_ids(output, repair=True)
    done_rejected = _done_ids(rejected_path, repair=True)
    skip = done | (set() if config.retry_rejected else done_rejected)
    todo = [e for e in examples if e.id not in skip]
    copy = [e for e in todo if e.demonstration and not config.regenerate]
    generate_these = [e for e in todo if not (e.demonstration and not config.regenerate)]
    remaining = 0
    if config.limit is not None and len(generate_these) > config.limit:
        remaining = len(generate_these) - config.limit
        generate_these = generate_these[: config.limit]
    report = DemosReport(input=str(config.input), output=str(output), rejected_path=str(rejected_path),
                         total=len(examples), already_done=len(examples) - len(todo), remaining=remaining)
    teacher_name = config.endpoint_model or config.teacher
    source = f"endpoint:{teacher_name}" if config.endpoint_url else teacher_name
    rejected: Counter[str] = Counter()
    cut: Counter[str] = Counter()
    first_error: Exception | None = None
    output.parent.mkdir(parents=True, exist_ok=True)
    with open(output, "a", encoding="utf-8") as out, open(rejected_path, "a", encoding="utf-8") as rej:

        def reject(example: Example, reply: str, reason: str, detail: str) -> None:
            rejected[reason] += 1
            _append(rej, {"id": example.id, "category": example.category, "prompt": example.prompt,
                          "output": reply, "reason": reason, "detail": detail, "teacher": source})

        for example in copy:
            _append(out, example.to_dict())
            report.copied += 1
        if generate_these:
            if teacher is None:
                teacher = _endpoint_teacher(config) if config.endpoint_url else _local_teacher(config)
            bar = tqdm(total=len(generate_these), desc="demonstrations", disable=not config.progress)
            try:
                for start in range(0, len(generate_these), config.batch_size):
                    batch = generate_these[start:start + config.batch_size]
                    replies = teacher([render_template(templates[e.category], e, taxonomy) for e in batch])
                    if len(replies) != len(batch):
                        raise ConfigError(f"the teacher returned {len(replies)} replies for {len(batch)} prompts",
                                          key="teacher")
                    passed: list[tuple[Example, str, str]] = []
                    for example, reply in zip(batch, replies, strict=True):
                        if isinstance(reply, Exception):
                            first_error = first_error or reply
                            continue  # not recorded: a failed request is retried on the next run
                        report.generated += 1
                        demonstration, reason, detail = normalize_demonstration(
                            reply, example.category, min_words=config.min_words, max_words=config.max_words,
                            template=templates[example.category], prompt=example.prompt_text(),
                            loop_ngram=config.loop_ngram,
                            max_repeated_ngram_share=config.max_repeated_ngram_share)
                        if demonstration is None:
                            reject(example, reply, reason or "rejected", detail)
                            continue
                        if detail:
                            cut["echoed template"] += 1
                        passed.append((example, reply, demonstration))
                    if passed and config.min_relevance is not None:
                        if encoder is None:
                            encoder = _load_encoder(config)
                        scores = relevance_scores(encoder, [e.prompt_text() for e, _, _ in passed],
                                                  [answer_of(d) for _, _, d in passed])
                        kept = []
                        for (example, reply, demonstration), score in zip(passed, scores, strict=True):
                            if score < config.min_relevance:
                                reject(example, reply, "off topic",
                                       f"cosine of prompt and answer {score:.3f} < {config.min_relevance:g}")
                            else:
                                kept.append((example, reply, demonstration))
                        passed = kept
                    for example, _, demonstration in passed:
                        row = example.to_dict()
                        row["demonstration"] = demonstration
                        row["meta"] = {**example.meta, "teacher": source}
                        _append(out, row)
                        report.accepted += 1
                    bar.update(len(batch))
                    if first_error is not None:
                        break  # the endpoint is failing: stop here, what was written is kept for the resume
            finally:
                bar.close()
    report.rejected = dict(rejected)
    report.cut = dict(cut)
    if first_error is not None:
        raise first_error
    report.empty_categories = _emptied_categories(examples, output, rejected_path)
    if report.empty_categories:
        logger.warning("demos: no demonstration left for %s: every one was rejected",
                       ", ".join(report.empty_categories))
    card = {"stage": "demos", "report": report.to_dict(),
            "config": {k: v for k, v in config_to_dict(config).items() if k != "progress"}}
    atomic_write_json(card_path(output), card)
    logger.info("%s", report.summary())
    return report
