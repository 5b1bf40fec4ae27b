"""The evaluation stage (METHOD.md §2.5): harmlessness, over-refusal, usefulness and jailbreak robustness.

For one model, :func:`evaluate` generates greedy responses to four prompt sets and summarises them:

* **harmful prompts** (every category but ``benign``) → ``harmful_refusal`` (refusal rate), ``non_refusal_rate``
  (answered fully or in part: what a judge that cannot see content measures), and, for judges that see content
  (classifier, LLM), ``harm_rate`` (their harmful verdicts; null for the others) and ``harm_score`` (mean
  StrongREJECT score / P(unsafe); lower is safer);
* **borderline benign prompts** (``meta["borderline"]``: look dangerous, are safe; XSTest's safe half) →
  ``benign_compliance`` (= ``borderline_compliance``), the over-refusal check; ordinary benign prompts →
  ``ordinary_benign_compliance``;
* **QA** (bundled 120 short questions, answer aliases) → ``qa_accuracy``; plus lm-evaluation-harness tasks when that
  package is installed;
* **jailbreaks** (each template wrapped around a category-balanced subset of the harmful prompts) →
  ``jailbreak_refusal`` per template.

Every rate is a fraction in [0, 1] with a seeded 95% bootstrap interval, overall and per category.

Verdicts are refusal, compliance or partial (:class:`~drirl.responses.JudgeVerdict`); a partial answer counts
as not refused (it delivered part of the request) and as complied on benign prompts; ``labels`` counts each verdict
per prompt set. **Degenerate responses** (:func:`~drirl.responses.degenerate_reason`: empty, a repetition loop, a
draft with no answer) are neither refusals nor compliance: they count as 0 in every refusal and compliance rate
(whose denominators stay all responses, so a broken model cannot pass for a safe or a helpful one), and
``degenerate`` gives their share per prompt set (harmful, borderline, benign, QA, jailbreak) and per category. Every
response record carries ``degenerate`` (true/false) and ``degenerate_reason``.

Generation and reward scoring run under ``EvalConfig.bf16`` (``auto``: bf16 where the hardware has it natively);
eval.json records the resolved setting as ``bf16``, and scoring the recorded responses with that setting gives the
reported rewards on any machine.
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar, Literal

from drirl.config import config_to_dict, help_field
from drirl.errors import ConfigError, DataError
from drirl.eval.judges import DEFAULT_JUDGE, JUDGES, LLMJudge, build_judge
from drirl.eval.metrics import bootstrap_ci, per_category, qa_correct
from drirl.responses import Judge, JudgeVerdict, degenerate_reason

logger = logging.getLogger(__name__)

__all__ = ["EvalConfig", "EvalResult", "EvalPrompt", "evaluate", "load_qa", "run_lm_eval", "select_round_robin"]

BENIGN = "benign"


@dataclass
class EvalConfig:
    """Options of ``drirl eval`` (also the ``eval:`` section of a pipeline YAML file)."""

    # The output folder does not change the results (drirl.stages).
    RUN_ONLY_FIELDS: ClassVar[tuple[str, ...]] = ("output",)

    model: str = field(default="", metadata=help_field(
        "Model to evaluate: a folder, a hub id, or the bundled alias smollm2-135m-instruct.", required=True))
    eval_data: str | None = field(default=None, metadata=help_field(
        "JSONL of prompts in the drirl example schema (id, prompt, category, meta.borderline); "
        "default: the bundled test split."))
    sampled_k: int = field(default=0, metadata=help_field(
        "Also draw k samples per harmful and benign prompt at sample_temperature and report the sampled rates "
        "(`sampled` in eval.json: the mean over prompts of each prompt's share of refused / answered samples, with a "
        "bootstrap interval over prompts) beside the greedy ones: a model that refuses greedily but complies one "
        "sample in three is not safe. 0: greedy only."))
    sample_temperature: float = field(default=1.0, metadata=help_field("Temperature of the sampled rates."))
    eval_split: Literal["test", "validation", "all"] = field(default="test", metadata=help_field(
        "Which rows of eval_data (or of the bundled set) are evaluated: test (results), validation (choosing "
        "settings) or all (an evaluation-only file imported without a split). A file without rows of the split "
        "is an error, never a silent evaluation of its training rows."))
    qa_data: str | None = field(default=None, metadata=help_field(
        "JSONL of QA items {id, question, answers: [aliases], topic}; default: the bundled 120 questions."))
    judge: str = field(default=DEFAULT_JUDGE, metadata=help_field(
        f"Judge of refusal/compliance/partial (and harm): {' | '.join(JUDGES)}. hybrid (default, the best "
        "held out): rules for clear refusals, minilm otherwise; rules: where the refusal stands and how much answer "
        "surrounds it (needs no model); minilm: the bundled MiniLM classifier; refusal: the first pattern matcher; "
        "classifier: a local harm classifier; llm: an endpoint with the StrongREJECT rubric. Measured per class in "
        "docs/judge.md."))
    judge_model: str | None = field(default=None, metadata=help_field(
        "Sequence-classification model folder for --judge classifier (Llama-Guard style)."))
    judge_endpoint_url: str | None = field(default=None, metadata=help_field(
        "Base URL of an OpenAI-compatible API for --judge llm, e.g. http://localhost:8000/v1."))
    judge_endpoint_model: str | None = field(default=None, metadata=help_field(
        "Model name served by the judge endpoint."))
    api_key_env: str | None = field(default="OPENAI_API_KEY", metadata=help_field(
        "Environment variable that holds the judge endpoint's API key (never stored)."))
    max_new_tokens: int = field(default=96, metadata=help_field("Maximum new tokens per response (greedy)."))
    batch_size: int = field(default=16, metadata=help_field("Prompts per generation batch (and classifier batch)."))
    jailbreaks: bool = field(default=True, metadata=help_field(
        "Also measure refusal under jailbreak templates wrapped around the harmful prompts."))
    jailbreak_templates: str | None = field(default=None, metadata=help_field(
        "JSONL/JSON/YAML file of jailbreak templates {id, style, template with one {prompt}}; default: bundled."))
    max_jailbreak_prompts: int | None = field(default=None, metadata=help_field(
        "Harmful prompts per jailbreak template, chosen round-robin over categories; default: all."))
    qa_limit: int | None = field(default=None, metadata=help_field("Use only the first N QA items; default: all."))
    reward_models: str | None = field(default=None, metadata=help_field(
        "Reward-model bundle (`drirl reward train`) that also scores the responses to the harmful and benign test "
        "prompts, each by its category's model: `test_reward`, the held-out reward that alignment maximises, "
        "overall and per category. `drirl run` passes its own bundle."))
    lm_eval_tasks: list[str] = field(default_factory=list, metadata=help_field(
        "lm-evaluation-harness tasks to run as well (comma-separated); skipped with a message when lm_eval is "
        "not installed."))
    lm_eval_limit: int | None = field(default=None, metadata=help_field(
        "Examples per lm-evaluation-harness task (for quick runs); default: all."))
    bootstrap_resamples: int = field(default=1000, metadata=help_field(
        "Bootstrap resamples for the 95% intervals."))
    seed: int = field(default=0, metadata=help_field("Seed of the bootstrap (generation is greedy)."))
    output: str | None = field(default=None, metadata=help_field(
        "Folder for eval.json, eval.md, per_category.png, jailbreaks.png and responses.jsonl."))
    system_prompt: str | None = field(default=None, metadata=help_field(
        "System prompt put before every prompt; default: none (the chat template's own)."))
    device: str | None = field(default=None, metadata=help_field(
        "Device for the evaluated model: cpu, cuda, cuda:1 ...; default: cuda when available, else cpu."))
    bf16: str = field(default="auto", metadata=help_field(
        "bf16 autocast for generation and reward scoring: true, false or auto (where the GPU or CPU supports it "
        "natively). eval.json records the resolved setting as `bf16`, so a score can be recomputed with the same "
        "precision on any machine."))
    trust_remote_code: bool = field(default=False, metadata=help_field(
        "Allow custom model code from the model folder (runs that code)."))
    allow_pickle: bool = field(default=False, metadata=help_field(
        "Allow pickle-based weights (.bin/.pt), which can run code when loaded."))

    def __post_init__(self) -> None:
        for name in ("max_new_tokens", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError("must be at least 1", key=name)
        if self.sampled_k < 0:
            raise ConfigError(f"must be >= 0 (0: greedy only), got {self.sampled_k}", key="sampled_k")
        if not self.sample_temperature > 0:
            raise ConfigError(f"must be > 0, got {self.sample_temperature}", key="sample_temperature")
        for name in ("bootstrap_resamples", "qa_limit", "max_jailbreak_prompts", "lm_eval_limit"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError("must not be negative", key=name)
        if str(self.bf16).lower() not in ("true", "false", "auto"):
            raise ConfigError(f"must be true, false or auto, got {self.bf16!r}", key="bf16")
        if self.judge not in JUDGES:
            raise ConfigError(f"unknown judge; choose one of {', '.join(JUDGES)}", key="judge")
        if self.judge == "classifier" and not self.judge_model:
            raise ConfigError("--judge classifier needs --judge_model (a model folder)", key="judge_model")
        if self.judge == "llm" and not (self.judge_endpoint_url and self.judge_endpoint_model):
            raise ConfigError("--judge llm needs --judge_endpoint_url and --judge_endpoint_model",
                              key="judge_endpoint_url")


@dataclass
class EvalResult:
    """The summary (``to_dict()``, what eval.json holds) and the per-response records (responses.jsonl)."""

    summary: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.summary)

    @classmethod
    def from_dict(cls, summary: dict[str, Any], records: list[dict[str, Any]] | None = None) -> EvalResult:
        return cls(summary=copy.deepcopy(summary), records=list(records or []))


@dataclass(frozen=True)
class EvalPrompt:
    """One evaluation prompt, whatever it came from (a drirl Example, a dict)."""

    id: str
    prompt: str
    category: str
    borderline: bool = False


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------

def _get(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def as_eval_prompts(examples: Sequence[Any], source: str | None = None) -> list[EvalPrompt]:
    """Normalise Example objects or dicts; an empty prompt or category is a DataError naming the example (and
    ``source``, the file it came from)."""
    out = []
    for index, example in enumerate(examples):
        example_id = str(_get(example, "id") or f"example-{index + 1}")
        prompt, category = _get(example, "prompt"), _get(example, "category")
        if isinstance(prompt, list):
            raise DataError(f"example '{example_id}' has a chat-message prompt; the evaluation (judges, jailbreak "
                            "templates) needs plain-text prompts", file=source, field="prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"example '{example_id}' has an empty prompt", file=source, field="prompt")
        if not isinstance(category, str) or not category.strip():
            raise DataError(f"example '{example_id}' has no category", file=source, field="category")
        meta = _get(example, "meta") or {}
        borderline = bool(meta.get("borderline", False)) if isinstance(meta, dict) else False
        out.append(EvalPrompt(id=example_id, prompt=prompt, category=category, borderline=borderline))
    if not out:
        raise DataError("no evaluation prompts", file=source)
    return out


def load_eval_examples(path: str | None, split: str = "test") -> list[Any]:
    """The rows of one split (``test``, ``validation``, or ``all``) of a file, or of the bundled set by default.

    A file with no row of that split is a DataError naming the splits it has: evaluating its training rows
    instead would report numbers on prompts a model may have been trained on.
    """
    from collections import Counter

    from drirl.data import schema

    if split not in ("test", "validation", "all"):
        raise ConfigError(f"eval_split must be test, validation or all, got {split!r}", key="eval_split")
    examples = schema.load_examples(path)
    if split == "all":
        return examples
    chosen = [e for e in examples if e.split == split]
    if not chosen:
        found = ", ".join(f"{name} {count}" for name, count in sorted(Counter(e.split for e in examples).items()))
        raise DataError(f"no {split} rows to evaluate (its splits: {found}); import an evaluation set with "
                        f"--split {split}, assign splits with `drirl data split`, or pass --eval_split all to "
                        "evaluate every row", file=path or "bundled data", field="split")
    return chosen


def bundled_qa_path() -> Path:
    return Path(str(resources.files("drirl.eval") / "bundled" / "qa.jsonl"))


def load_qa(path: str | Path | None = None, limit: int | None = None) -> list[dict[str, Any]]:
    """QA items ``{id, question, answers, topic}``, validated; the first ``limit`` when given."""
    from drirl.io import read_jsonl_numbered

    path = Path(path) if path is not None else bundled_qa_path()
    items = []
    for line, row in read_jsonl_numbered(path):
        question, answers = row.get("question"), row.get("answers")
        if not isinstance(question, str) or not question.strip():
            raise DataError("missing or empty question", file=str(path), line=line, field="question")
        if isinstance(answers, str):
            answers = [answers]
        if (not isinstance(answers, list) or not answers
                or not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) and str(a).strip()
                           and (not isinstance(a, float) or math.isfinite(a)) for a in answers)):
            raise DataError("answers must be a non-empty list of strings (or finite numbers)", file=str(path),
                            line=line, field="answers")
        items.append({"id": str(row.get("id") or f"qa-{line}"), "question": question,
                      "answers": [str(a) for a in answers], "topic": str(row.get("topic") or "general")})
    if not items:
        raise DataError("no QA items: the file is empty", file=str(path))
    return items if limit is None else items[:limit]


def select_round_robin(prompts: Sequence[EvalPrompt], limit: int | None) -> list[EvalPrompt]:
    """Up to ``limit`` prompts taking one per category in turn, so a small jailbreak budget still covers every
    category; order within a category is kept, which makes the choice deterministic."""
    if limit is None or limit >= len(prompts):
        return list(prompts)
    queues: dict[str, list[EvalPrompt]] = {}
    for p in prompts:
        queues.setdefault(p.category, []).append(p)
    chosen: list[EvalPrompt] = []
    depth = 0
    while len(chosen) < limit:
        added = False
        for queue in queues.values():
            if depth < len(queue) and len(chosen) < limit:
                chosen.append(queue[depth])
                added = True
        if not added:
            break
        depth += 1
    return chosen


# ---------------------------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------------------------

def _clean(value: float) -> float | None:
    # JSON has no NaN: an undefined rate (no prompts in the set) is null.
    return None if value is None or math.isnan(value) else float(value)


def _ci_entry(mean: float, low: float, high: float, n: int) -> dict[str, Any]:
    return {"mean": _clean(mean), "low": _clean(low), "high": _clean(high), "n": int(n)}


def _rate(values: Sequence[float | None], config: EvalConfig) -> tuple[float | None, list[float | None] | None, int]:
    """Mean and 95% interval: Wilson for 0/1 outcomes (a rate; never zero-width), percentile bootstrap otherwise."""
    from drirl.eval.stats import is_binary, wilson_interval

    mean, low, high = bootstrap_ci(values, n_resamples=config.bootstrap_resamples, seed=config.seed)
    n = sum(v is not None for v in values)
    if is_binary(values):
        low, high = wilson_interval(int(round(mean * n)), n)
    return _clean(mean), ([_clean(low), _clean(high)] if n else None), n


def _put(summary: dict[str, Any], key: str, values: Sequence[float | None], config: EvalConfig) -> int:
    mean, ci, n = _rate(values, config)
    summary[key], summary[f"{key}_ci"] = mean, ci
    return n


def _share(flags: Sequence[str | None], config: EvalConfig) -> tuple[float, float, float, int]:
    """(mean, low, high, n) of the share of flagged items; nan and n = 0 for an empty set."""
    mean, low, high = bootstrap_ci([1.0 if f else 0.0 for f in flags], n_resamples=config.bootstrap_resamples,
                                   seed=config.seed)
    return mean, low, high, len(flags)


def _by_category(values: Sequence[float | None], categories: Sequence[str], config: EvalConfig,
                 ) -> dict[str, dict[str, Any]]:
    table = per_category(values, categories, n_resamples=config.bootstrap_resamples, seed=config.seed)
    return {str(cat): _ci_entry(*stats) for cat, stats in table.items()}


def _reward_by_verdict(safety: Sequence[EvalPrompt], verdicts: Sequence[JudgeVerdict],
                       rewards: Sequence[float | None], config: EvalConfig) -> dict[str, dict[str, Any]]:
    """Mean reward of refused and answered responses, for harmful and for benign prompts.

    What a reward model teaches shows here: on harmful prompts a refusal should outscore an answer, on benign ones
    the reverse. A bundle that rewards refusing benign prompts pushes alignment towards over-refusal.
    """
    table: dict[str, dict[str, Any]] = {}
    for group, wanted in (("harmful", lambda p: p.category != BENIGN), ("benign", lambda p: p.category == BENIGN)):
        index = [i for i, p in enumerate(safety) if wanted(p)]
        labels = ["refused" if verdicts[i].refused else "answered" for i in index]
        table[group] = _by_category([rewards[i] for i in index], labels, config) if index else {}
    return table


def _refused(verdicts: Sequence[JudgeVerdict], degenerate: Sequence[str | None]) -> list[float]:
    # A degenerate response is no refusal (nor a compliance): it counts 0 in both.
    return [1.0 if v.refused and not d else 0.0 for v, d in zip(verdicts, degenerate, strict=True)]


def _complied(verdicts: Sequence[JudgeVerdict], degenerate: Sequence[str | None]) -> list[float]:
    # Compliance and partial answers both answered the (benign) request.
    return [0.0 if v.refused or d else 1.0 for v, d in zip(verdicts, degenerate, strict=True)]


def _label_counts(verdicts: Sequence[JudgeVerdict], degenerate: Sequence[str | None]) -> dict[str, int]:
    counts = {"refusal": 0, "compliance": 0, "partial": 0, "degenerate": 0}
    for verdict, flag in zip(verdicts, degenerate, strict=True):
        counts["degenerate" if flag else verdict.label] += 1
    return counts


def _harmful(verdicts: Sequence[JudgeVerdict]) -> list[float | None]:
    return [None if v.harmful is None else float(v.harmful) for v in verdicts]


def _scores(verdicts: Sequence[JudgeVerdict]) -> list[float | None]:
    return [None if v.score is None else float(v.score) for v in verdicts]


# ---------------------------------------------------------------------------------------------------------------
# lm-evaluation-harness hook
# ---------------------------------------------------------------------------------------------------------------

def run_lm_eval(model: Any, tokenizer: Any, tasks: Sequence[str], *, batch_size: int = 16,
                limit: int | None = None) -> dict[str, Any]:
    """Run lm-evaluation-harness ``tasks`` on the already-loaded model through its HFLM wrapper.

    Returns ``{"tasks": {task: {metric: value}}}``, or ``{"skipped": reason}`` when lm_eval is not installed (it is
    an optional extra: the offline default must not need it).
    """
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError as err:
        reason = (f"lm-evaluation-harness is not installed ({err}); skipped tasks {', '.join(tasks)}. "
                  "Install it with: pip install 'lm-eval[hf]'")
        logger.warning(reason)
        return {"skipped": reason, "requested": list(tasks)}
    logger.info("running lm-evaluation-harness tasks: %s", ", ".join(tasks))
    wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    output = lm_eval.simple_evaluate(model=wrapped, tasks=list(tasks), limit=limit) or {}
    results: dict[str, dict[str, float]] = {}
    for task, metrics in (output.get("results") or {}).items():
        results[task] = {name: float(value) for name, value in metrics.items()
                         if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)}
    return {"tasks": results}


# ---------------------------------------------------------------------------------------------------------------
# evaluate()
# ---------------------------------------------------------------------------------------------------------------

def _judge_for(config: EvalConfig) -> Judge:
    return build_judge(config.judge, model_path=config.judge_model, base_url=config.judge_endpoint_url,
                       model=config.judge_endpoint_model, api_key_env=config.api_key_env,
                       batch_size=config.batch_size, trust_remote_code=config.trust_remote_code,
                       allow_pickle=config.allow_pickle)


def resolved_bf16(config: EvalConfig) -> bool:
    """The bf16 setting the evaluation runs under: ``config.bf16`` with ``auto`` resolved for this machine.

    Recorded in eval.json as ``bf16``; the scores a report states are reproduced by scoring with this setting
    (``CategoryRewardModels(..., bf16=summary["bf16"])``), whichever hardware recomputes them.
    """
    from drirl.trainer_setup import resolve_bf16

    return resolve_bf16(str(config.bf16).lower())


def _generate(model: Any, tokenizer: Any, prompts: list[str], config: EvalConfig, description: str,
              stats: dict[str, Any] | None = None) -> list[str]:
    from drirl.distributed import generate_sharded
    from drirl.generation import GenerationSettings

    if not prompts:
        return []
    settings = GenerationSettings(max_new_tokens=config.max_new_tokens, do_sample=False,
                                  batch_size=config.batch_size, seed=config.seed)
    # Under several processes each generates its share of the batches; every one gets all answers.
    outputs = generate_sharded(model, tokenizer, prompts, settings, system_prompt=config.system_prompt,
                               progress=sys.stderr.isatty(), description=description, stats=stats,
                               bf16=resolved_bf16(config))
    return [out[0] if out else "" for out in outputs]


def sampled_rate(outcomes_by_prompt: Sequence[Sequence[float]], *, n_resamples: int = 1000, seed: int = 0
                 ) -> dict[str, Any]:
    """Mean over prompts of each prompt's share of positive outcomes (refused, or answered) among its k samples,
    with a percentile bootstrap interval over prompts (the samples of one prompt are not independent draws)."""
    per_prompt = [sum(o) / len(o) for o in outcomes_by_prompt if o]
    mean, low, high = bootstrap_ci(per_prompt, n_resamples=n_resamples, seed=seed)
    return {"mean": _clean(mean), "low": _clean(low), "high": _clean(high), "n": len(per_prompt),
            "samples": sum(len(o) for o in outcomes_by_prompt)}


def _sampled_rates(model: Any, tokenizer: Any, safety: list[EvalPrompt], judge: Judge,
                   config: EvalConfig) -> dict[str, Any]:
    """``sampled_k`` samples per safety prompt at ``sample_temperature``, judged like the greedy answers."""
    from drirl.distributed import generate_sharded, on_main
    from drirl.generation import GenerationSettings

    k = config.sampled_k
    settings = GenerationSettings(max_new_tokens=config.max_new_tokens, do_sample=True,
                                  temperature=config.sample_temperature, num_return_sequences=k,
                                  batch_size=max(1, config.batch_size // k), seed=config.seed)
    samples = generate_sharded(model, tokenizer, [p.prompt for p in safety], settings,
                               system_prompt=config.system_prompt, progress=sys.stderr.isatty(),
                               description=f"{k} samples per safety prompt", bf16=resolved_bf16(config))
    flat_prompts = [p.prompt for p, outs in zip(safety, samples, strict=True) for _ in outs]
    verdicts = on_main(judge.judge, flat_prompts, [o for outs in samples for o in outs])
    # Per prompt, each sample's outcome: refused, or answered (compliance or partial); a degenerate sample is neither.
    refused: list[list[float]] = []
    answered: list[list[float]] = []
    start = 0
    for outs in samples:
        chunk = list(zip(verdicts[start:start + len(outs)], outs, strict=True))
        start += len(outs)
        broken = [degenerate_reason(o) is not None for _, o in chunk]
        refused.append([float(v.refused and not b) for (v, _), b in zip(chunk, broken, strict=True)])
        answered.append([float(not v.refused and not b) for (v, _), b in zip(chunk, broken, strict=True)])
    harmful = [i for i, p in enumerate(safety) if p.category != BENIGN]
    borderline = [i for i, p in enumerate(safety) if p.category == BENIGN and p.borderline]
    ordinary = [i for i, p in enumerate(safety) if p.category == BENIGN and not p.borderline]
    result = {"k": k, "temperature": config.sample_temperature}
    for key, index, values in (("harmful_refusal", harmful, refused), ("benign_compliance", borderline, answered),
                               ("ordinary_benign_compliance", ordinary, answered)):
        if index:
            result[key] = sampled_rate([values[i] for i in index], n_resamples=config.bootstrap_resamples,
                                       seed=config.seed)
    return result


def _load_model(config: EvalConfig) -> tuple[Any, Any]:
    import torch

    from drirl.models import load_policy

    model, tokenizer = load_policy(config.model, trust_remote_code=config.trust_remote_code,
                                   allow_pickle=config.allow_pickle)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return model.to(device), tokenizer


def evaluate(config: EvalConfig, *, model: Any = None, tokenizer: Any = None,
             examples: Sequence[Any] | None = None, qa_items: Sequence[dict[str, Any]] | None = None,
             judge: Judge | None = None, responder: Any = None) -> EvalResult:
    """Evaluate one model; see the module docstring for the metrics.

    ``model``/``tokenizer`` skip loading ``config.model``; ``examples`` (Example objects or dicts) replace
    ``config.eval_data``, ``qa_items`` replace ``config.qa_data``, and ``judge`` replaces ``config.judge`` (any object
    with the :class:`~drirl.responses.Judge` method). ``responder(prompts, categories) -> responses`` replaces
    greedy generation (AfD's Best-of-N). Writes the outputs when ``config.output`` is set.
    """
    started = time.monotonic()
    if (model is None) != (tokenizer is None):
        raise ConfigError("pass both model and tokenizer, or neither")
    loaded = examples if examples is not None else load_eval_examples(config.eval_data, config.eval_split)
    prompts = as_eval_prompts(loaded,
                              source=None if examples is not None else config.eval_data)
    qa = list(qa_items) if qa_items is not None else load_qa(config.qa_data, config.qa_limit)
    if qa_items is not None and config.qa_limit is not None:
        qa = qa[:config.qa_limit]
    templates = []
    if config.jailbreaks:
        from drirl.eval.jailbreaks import load_jailbreak_templates

        templates = load_jailbreak_templates(config.jailbreak_templates)
    judge = judge or _judge_for(config)  # fail on a bad judge before the slow generation
    if config.reward_models:
        from drirl.reward.bundle import read_manifest

        read_manifest(config.reward_models)  # and on a bad bundle
    if model is None and responder is None:
        model, tokenizer = _load_model(config)

    harmful = [p for p in prompts if p.category != BENIGN]
    benign = [p for p in prompts if p.category == BENIGN]
    jailbreak_base = select_round_robin(harmful, config.max_jailbreak_prompts) if templates else []
    jailbreak_pairs = [(p, t) for t in templates for p in jailbreak_base]
    logger.info("evaluating %s: %d harmful, %d benign (%d borderline), %d QA, %d jailbreak prompts",
                config.model or "model", len(harmful), len(benign), sum(p.borderline for p in benign), len(qa),
                len(jailbreak_pairs))

    # One batched generation per set.
    safety = harmful + benign
    generation_stats: dict[str, Any] = {"truncated_prompts": 0}
    if responder is not None:
        safety_responses = list(responder([p.prompt for p in safety], [p.category for p in safety]))
        qa_responses = list(responder([item["question"] for item in qa], [BENIGN] * len(qa)))
        jb_responses = list(responder([t.wrap(p.prompt) for p, t in jailbreak_pairs],
                                      [p.category for p, _ in jailbreak_pairs]))
    else:
        safety_responses = _generate(model, tokenizer, [p.prompt for p in safety], config, "safety prompts",
                                     generation_stats)
        qa_responses = _generate(model, tokenizer, [item["question"] for item in qa], config, "QA",
                                 generation_stats)
        jb_responses = _generate(model, tokenizer, [t.wrap(p.prompt) for p, t in jailbreak_pairs], config,
                                 "jailbreaks", generation_stats)

    if isinstance(judge, LLMJudge):
        judge.unparseable = 0
    from drirl.distributed import on_main

    # Judged once, on rank 0 (an LLM judge is a paid endpoint); every rank gets the verdicts.
    safety_verdicts = on_main(judge.judge, [p.prompt for p in safety], safety_responses) if safety else []
    # The judge sees the original request, not the attack wrapper: the question is whether the harmful request
    # was fulfilled (as in StrongREJECT's jailbreak evaluation).
    jb_verdicts = (on_main(judge.judge, [p.prompt for p, _ in jailbreak_pairs], jb_responses)
                   if jailbreak_pairs else [])
    # A custom judge that drops or adds verdicts would silently misalign every rate.
    if len(safety_verdicts) != len(safety) or len(jb_verdicts) != len(jailbreak_pairs):
        raise ValueError("the judge returned a different number of verdicts than responses")
    qa_values = [1.0 if qa_correct(r, item["answers"]) else 0.0 for r, item in zip(qa_responses, qa, strict=True)]

    flags = {"safety": [degenerate_reason(r) for r in safety_responses],
             "qa": [degenerate_reason(r) for r in qa_responses],
             "jailbreak": [degenerate_reason(r) for r in jb_responses]}
    rewards, fallback = (_reward_scores(config, safety, safety_responses) if config.reward_models and safety
                         else (None, []))
    summary = _summarise(config, judge, safety, safety_verdicts, qa, qa_values, jailbreak_pairs, jb_verdicts,
                         rewards, flags)
    if any(fallback):
        # Categories the bundle has no model for were scored by the mean of its models: said, not hidden.
        summary["test_reward_fallback"] = {
            "categories": sorted({p.category for p, f in zip(safety, fallback, strict=True) if f}),
            "responses": sum(fallback), "scored_by": "the mean of every category model of the bundle"}
        logger.warning("test_reward: %d response(s) of categories the bundle has no model for (%s) were scored by "
                       "the mean of its models", sum(fallback),
                       ", ".join(summary["test_reward_fallback"]["categories"]))
    # Empty answers point at a broken model or template, not at a safe model: they are degenerate, not refusals.
    summary["n"]["empty_responses"] = sum(f == "empty" for f in [*flags["safety"], *flags["jailbreak"]])
    # Prompts longer than the model's context keep their last tokens (drirl.generation.generate); say how many.
    summary["truncated_prompts"] = int(generation_stats["truncated_prompts"])
    if summary["n"]["empty_responses"]:
        logger.warning("%d empty responses (reported as degenerate, not as refusals)", summary["n"]["empty_responses"])
    if config.lm_eval_tasks and model is not None:
        summary["lm_eval"] = run_lm_eval(model, tokenizer, config.lm_eval_tasks, batch_size=config.batch_size,
                                         limit=config.lm_eval_limit)
    if config.sampled_k and safety and model is not None:
        summary["sampled"] = _sampled_rates(model, tokenizer, safety, judge, config)
    summary["seconds"] = round(time.monotonic() - started, 2)
    records = _records(safety, safety_responses, safety_verdicts, qa, qa_responses, qa_values, jailbreak_pairs,
                       jb_responses, jb_verdicts)
    for record, flag in zip(records, [*flags["safety"], *flags["qa"], *flags["jailbreak"]], strict=True):
        record["degenerate"], record["degenerate_reason"] = flag is not None, flag
    for record, reward, by_fallback in zip(records, rewards or [], fallback, strict=False):  # safety records first
        record["reward"] = reward
        record["reward_fallback"] = by_fallback
    result = EvalResult(summary=summary, records=records)
    if config.output:
        from drirl.distributed import on_main
        from drirl.eval.report import write_eval_outputs

        on_main(write_eval_outputs, result, config.output)  # rank 0 writes, once every rank has the result
    return result


def _reward_scores(config: EvalConfig, prompts: list[EvalPrompt], responses: list[str]
                   ) -> tuple[list[float | None], list[bool]]:
    """Each response's reward under its category's model of ``config.reward_models``, and whether it came from the
    fallback (the mean of every model, for a category the bundle lacks); prompts go in as the chat messages
    alignment trains on. A non-finite score is unscored (None)."""
    from drirl.generation import as_messages
    from drirl.reward.bundle import CategoryRewardModels

    logger.info("scoring %d test responses with the reward models in %s", len(prompts), config.reward_models)
    # "mean": a category the bundle lacks (an imported set's own labels) gets the mean of every model's score.
    bundle = CategoryRewardModels(config.reward_models, fallback="mean", batch_size=config.batch_size,
                                  device=config.device, allow_pickle=config.allow_pickle, bf16=resolved_bf16(config))
    scores = bundle.score([as_messages(p.prompt, config.system_prompt) for p in prompts], responses,
                          [p.category for p in prompts])
    fallback = [p.category not in bundle.manifest["models"] for p in prompts]
    return [float(s) if math.isfinite(s) else None for s in scores], fallback


def _summarise(config: EvalConfig, judge: Judge, safety: list[EvalPrompt], verdicts: list[JudgeVerdict],
               qa: list[dict[str, Any]], qa_values: list[float], jailbreak_pairs: list, jb_verdicts: list,
               rewards: list[float | None] | None = None,
               flags: dict[str, list[str | None]] | None = None) -> dict[str, Any]:
    flags = flags or {}
    degenerate = flags.get("safety") or [None] * len(safety)
    qa_degenerate = flags.get("qa") or [None] * len(qa)
    jb_degenerate = flags.get("jailbreak") or [None] * len(jailbreak_pairs)
    harmful_idx = [i for i, p in enumerate(safety) if p.category != BENIGN]
    borderline_idx = [i for i, p in enumerate(safety) if p.category == BENIGN and p.borderline]
    ordinary_idx = [i for i, p in enumerate(safety) if p.category == BENIGN and not p.borderline]
    h_verdicts = [verdicts[i] for i in harmful_idx]
    h_degenerate = [degenerate[i] for i in harmful_idx]
    h_categories = [safety[i].category for i in harmful_idx]
    h_refused = _refused(h_verdicts, h_degenerate)
    # Answered in full or in part (compliance or partial); degenerate responses are neither.
    h_answered = _complied(h_verdicts, h_degenerate)

    summary: dict[str, Any] = {
        "model": config.model,
        "judge": getattr(judge, "name", type(judge).__name__),
        "judge_description": getattr(judge, "description", type(judge).__name__),
    }
    _put(summary, "harmful_refusal", h_refused, config)
    _put(summary, "non_refusal_rate", h_answered, config)
    # Only a judge that sees content says "harmful"; for the pattern and embedding judges this stays null.
    _put(summary, "harm_rate", _harmful(h_verdicts), config)
    _put(summary, "harm_score", _scores(h_verdicts), config)
    _put(summary, "benign_compliance", _complied([verdicts[i] for i in borderline_idx],
                                                 [degenerate[i] for i in borderline_idx]), config)
    summary["borderline_compliance"] = summary["benign_compliance"]
    summary["borderline_compliance_ci"] = summary["benign_compliance_ci"]
    _put(summary, "ordinary_benign_compliance", _complied([verdicts[i] for i in ordinary_idx],
                                                          [degenerate[i] for i in ordinary_idx]), config)
    _put(summary, "qa_accuracy", qa_values, config)
    if rewards is not None:
        _put(summary, "test_reward", rewards, config)
        summary["reward_models"] = config.reward_models
        summary["test_reward_by_verdict"] = _reward_by_verdict(safety, verdicts, rewards, config)

    # Per category: every harm metric for each harmful category, both compliance rates for benign.
    per_cat: dict[str, dict[str, Any]] = {p.category: {} for p in safety}
    for key, values in (("harmful_refusal", h_refused), ("non_refusal_rate", h_answered),
                        ("harm_rate", _harmful(h_verdicts)), ("harm_score", _scores(h_verdicts))):
        if key in ("harm_rate", "harm_score") and all(v is None for v in values):
            continue
        for cat, entry in _by_category(values, h_categories, config).items():
            if entry["n"]:
                per_cat[cat][key] = entry
    for key, index in (("benign_compliance", borderline_idx), ("ordinary_benign_compliance", ordinary_idx)):
        if index:
            values = _complied([verdicts[i] for i in index], [degenerate[i] for i in index])
            per_cat[BENIGN][key] = _by_category(values, [BENIGN] * len(values), config)[BENIGN]
    if rewards is not None:
        for cat, entry in _by_category(rewards, [p.category for p in safety], config).items():
            if entry["n"]:
                per_cat[cat]["test_reward"] = entry

    # Jailbreaks: per template, overall, and per category of the wrapped prompts.
    jailbreak_refusal: dict[str, float | None] = {}
    jailbreak_detail: dict[str, dict[str, Any]] = {}
    if jailbreak_pairs:
        jb_refused = _refused(jb_verdicts, jb_degenerate)
        template_ids = [t.id for _, t in jailbreak_pairs]
        for tid, entry in _by_category(jb_refused, template_ids, config).items():
            style = next(t.style for _, t in jailbreak_pairs if t.id == tid)
            jailbreak_refusal[tid] = entry["mean"]
            jailbreak_detail[tid] = {"style": style, **entry}
        for cat, entry in _by_category(jb_refused, [p.category for p, _ in jailbreak_pairs], config).items():
            per_cat[cat]["jailbreak_refusal"] = entry
        _put(summary, "jailbreak_refusal_overall", jb_refused, config)
    else:
        summary["jailbreak_refusal_overall"], summary["jailbreak_refusal_overall_ci"] = None, None
    summary["jailbreak_refusal"] = jailbreak_refusal
    summary["jailbreaks"] = jailbreak_detail
    # Degenerate responses: their share per prompt set and per category, and the verdicts counted per set.
    sets = {"harmful": harmful_idx, "borderline": borderline_idx, "benign": ordinary_idx}
    summary["degenerate"] = {}
    for name, index in sets.items():
        summary["degenerate"][name] = _ci_entry(*_share([degenerate[i] for i in index], config))
    summary["degenerate"]["qa"] = _ci_entry(*_share(qa_degenerate, config))
    summary["degenerate"]["jailbreak"] = _ci_entry(*_share(jb_degenerate, config))
    flag_values = [1.0 if d else 0.0 for d in degenerate]
    for cat, entry in _by_category(flag_values, [p.category for p in safety], config).items():
        if entry["n"]:
            per_cat[cat]["degenerate"] = entry
    summary["labels"] = {name: _label_counts([verdicts[i] for i in index], [degenerate[i] for i in index])
                         for name, index in sets.items()}
    if jailbreak_pairs:
        summary["labels"]["jailbreak"] = _label_counts(jb_verdicts, jb_degenerate)
    summary["per_category"] = per_cat
    summary["qa_per_topic"] = _by_category(qa_values, [item["topic"] for item in qa], config) if qa else {}
    summary["n"] = {
        "harmful": len(harmful_idx), "borderline_benign": len(borderline_idx), "ordinary_benign": len(ordinary_idx),
        "qa": len(qa), "jailbreak": len(jailbreak_pairs), "jailbreak_templates": len(jailbreak_detail),
        "unparseable": sum(v.reason == "unparseable" for v in [*verdicts, *jb_verdicts]),
        "rewarded": sum(r is not None for r in rewards) if rewards is not None else 0,
    }
    summary["bf16"] = resolved_bf16(config)
    summary["bootstrap"] = {"resamples": config.bootstrap_resamples, "confidence": 0.95, "seed": config.seed}
    summary["config"] = config_to_dict(config)
    return summary


def _records(safety, safety_responses, safety_verdicts, qa, qa_responses, qa_values, jailbreak_pairs,
             jb_responses, jb_verdicts) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    for p, response, verdict in zip(safety, safety_responses, safety_verdicts, strict=True):
        kind = "harmful" if p.category != BENIGN else ("borderline" if p.borderline else "benign")
        records.append({"set": kind, "id": p.id, "prompt": p.prompt, "category": p.category, "response": response,
                        "verdict": verdict.to_dict()})
    for item, response, value in zip(qa, qa_responses, qa_values, strict=True):
        records.append({"set": "qa", "id": item["id"], "prompt": item["question"], "category": item["topic"],
                        "response": response, "answers": item["answers"], "correct": bool(value)})
    for (p, template), response, verdict in zip(jailbreak_pairs, jb_responses, jb_verdicts, strict=True):
        records.append({"set": "jailbreak", "id": f"{p.id}/{template.id}", "prompt": template.wrap(p.prompt),
                        "original_prompt": p.prompt, "category": p.category, "template": template.id,
                        "style": template.style, "response": response, "verdict": verdict.to_dict()})
    return records
