"""Evaluation stage (METHOD.md §2.5): harmlessness, over-refusal, usefulness and jailbreak robustness.

* :mod:`drirl.eval.judges` — pluggable judges with three verdicts (refusal, compliance, partial): the offline
  :class:`HybridJudge` (default), :class:`RulesJudge`, :class:`LearnedJudge` and the first :class:`RefusalMatcher`,
  a local :class:`ClassifierJudge` and an :class:`LLMJudge` with the StrongREJECT rubric; :func:`judge_file`
  (``drirl judge``) and :func:`degenerate_reason`;
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
    REFUSAL_PATTERNS,
    ClassifierJudge,
    HybridJudge,
    Judge,
    JudgeVerdict,
    LearnedJudge,
    LLMJudge,
    RefusalMatcher,
    RulesJudge,
    build_judge,
    degenerate_reason,
    judge_file,
)
from drirl.eval.metrics import bootstrap_ci, per_category, qa_correct
from drirl.eval.report import compare_results, render_markdown, write_eval_outputs

__all__ = [
    "REFUSAL_PATTERNS",
    "ClassifierJudge",
    "EvalConfig",
    "HybridJudge",
    "EvalResult",
    "JailbreakTemplate",
    "Judge",
    "JudgeVerdict",
    "LLMJudge",
    "LearnedJudge",
    "RefusalMatcher",
    "RulesJudge",
    "bootstrap_ci",
    "build_judge",
    "compare_results",
    "degenerate_reason",
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
