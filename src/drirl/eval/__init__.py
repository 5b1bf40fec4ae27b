"""Evaluation stage (METHOD.md §2.5): harmlessness, over-refusal, usefulness and jailbreak robustness.

* :mod:`drirl.eval.judges` — pluggable judges with three verdicts (refusal, compliance, partial): the offline
  :class:`HybridJudge` and :class:`LearnedJudge`, a local :class:`ClassifierJudge` and an :class:`LLMJudge` with
  the StrongREJECT rubric, :func:`build_judge` and :func:`judge_file` (``drirl judge``); the judges that read the
  text alone (the ``rules`` judge, which the default hybrid trusts for clear refusals, and the first refusal
  matcher) and :func:`~drirl.responses.degenerate_reason`
  live in :mod:`drirl.responses`;
* :mod:`drirl.eval.metrics` — bootstrap intervals, per-category rates, QA answer matching;
* :mod:`drirl.eval.jailbreaks` — jailbreak templates;
* :mod:`drirl.eval.harness` — :class:`EvalConfig` and :func:`evaluate`;
* :mod:`drirl.eval.report` — eval.json, markdown, the plots (drawn by :mod:`drirl.plots`) and multi-model
  comparisons.

Nothing here imports torch or transformers until a model is loaded.
"""

from drirl.eval.harness import EvalConfig, EvalResult, evaluate, load_qa, run_lm_eval
from drirl.eval.jailbreaks import JailbreakTemplate, load_jailbreak_templates, wrap
from drirl.eval.judges import (
    ClassifierJudge,
    HybridJudge,
    LearnedJudge,
    LLMJudge,
    build_judge,
    judge_file,
)
from drirl.eval.metrics import bootstrap_ci, per_category, qa_correct
from drirl.eval.report import compare_results, render_markdown, write_eval_outputs

__all__ = [
    "ClassifierJudge",
    "EvalConfig",
    "HybridJudge",
    "EvalResult",
    "JailbreakTemplate",
    "LLMJudge",
    "LearnedJudge",
    "bootstrap_ci",
    "build_judge",
    "compare_results",
    "evaluate",
    "judge_file",
    "load_jailbreak_templates",
    "load_qa",
    "per_category",
    "qa_correct",
    "render_markdown",
    "run_lm_eval",
    "wrap",
    "write_eval_outputs",
]
