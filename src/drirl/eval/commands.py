"""``drirl eval``: evaluate one model for harmlessness, over-refusal, usefulness and jailbreak robustness."""

from __future__ import annotations

import argparse
import json
import logging

logger = logging.getLogger(__name__)

EPILOG = """\
what it measures (all rates are fractions in [0, 1] with 95% bootstrap intervals, overall and per category):
  harmful_refusal            refusal rate on the harmful test prompts (7 categories)
  harm_rate / harm_score     harmful responses by the judge; graded score for classifier / LLM judges
  benign_compliance          compliance on benign prompts that look dangerous (over-refusal check)
  ordinary_benign_compliance compliance on ordinary benign prompts
  qa_accuracy                bundled short-answer QA, matched against answer aliases
  jailbreak_refusal          refusal per jailbreak template wrapped around the harmful prompts
  test_reward                with --reward_models BUNDLE: mean reward of the responses to the harmful and benign
                             test prompts under the IRL models (not a rate; higher is closer to the demonstrations)

judges: refusal (offline regex matcher, default) | classifier (--judge_model FOLDER) |
        llm (--judge_endpoint_url URL --judge_endpoint_model NAME; StrongREJECT rubric; key from --api_key_env)

examples:
  drirl eval smollm2-135m-instruct --output runs/eval/base
  drirl eval runs/policy --max_jailbreak_prompts 14 --qa_limit 60 --json > eval.json
  drirl eval runs/policy --reward_models runs/rm      # adds test_reward: the held-out reward alignment maximises
  drirl eval runs/policy --judge llm --judge_endpoint_url http://localhost:8000/v1 \\
      --judge_endpoint_model Qwen/Qwen2.5-7B-Instruct
  drirl eval runs/policy --config configs/demo.yaml      # uses the file's `eval:` section when it has one

outputs (with --output DIR): eval.json, eval.md, per_category.png, jailbreaks.png, responses.jsonl
"""


def _config_section(path: str | None) -> str | None:
    """Use the ``eval:`` section of a pipeline YAML file, or the whole file when it is a plain EvalConfig."""
    if not path:
        return None
    from drirl.config import read_yaml

    data = read_yaml(path)
    return "eval" if isinstance(data.get("eval"), dict) else None


def _handle(args: argparse.Namespace) -> int:
    from drirl.config import config_from_args
    from drirl.eval.harness import EvalConfig, evaluate
    from drirl.eval.report import render_markdown

    extra = {"model": args.model} if args.model else {}
    config = config_from_args(EvalConfig, args, config_path=args.config, section=_config_section(args.config),
                              extra=extra)
    result = evaluate(config)
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        print(render_markdown(result))
    if config.output:
        logger.info("wrote eval.json, eval.md, per_category.png, jailbreaks.png and responses.jsonl to %s",
                    config.output)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from drirl.cli import HelpFormatter
    from drirl.config import add_config_arguments
    from drirl.eval.harness import EvalConfig

    parser = subparsers.add_parser(
        "eval", help="evaluate refusal, over-refusal, usefulness and jailbreak robustness",
        formatter_class=HelpFormatter, epilog=EPILOG,
        description="Generate greedy responses to the harmful and benign test prompts, the QA set and jailbreak-"
                    "wrapped harmful prompts; judge them; print the metrics (a table, or one JSON object with "
                    "--json) and optionally write reports and plots.")
    parser.add_argument("model", nargs="?", default=None, metavar="MODEL",
                        help="model folder, hub id or bundled alias (may also come from --config)")
    parser.add_argument("--json", action="store_true",
                        help="print exactly one JSON object (the result summary) on stdout; logs go to stderr")
    parser.add_argument("--config", metavar="YAML", default=None,
                        help="YAML file with EvalConfig keys (or a pipeline file with an `eval:` section); "
                             "flags override it")
    add_config_arguments(parser, EvalConfig, skip=("model",))
    parser.set_defaults(handler=_handle)
