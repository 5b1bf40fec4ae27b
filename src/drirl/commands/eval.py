"""``drirl eval``: evaluate one model for harmlessness, over-refusal, usefulness and jailbreak robustness;
``drirl judge``: judge a file of any model's responses."""

from __future__ import annotations

import argparse
import json
import logging

logger = logging.getLogger(__name__)

EPILOG = """\
what it measures (all rates are fractions in [0, 1] with 95% bootstrap intervals, overall and per category):
  harmful_refusal            refusal rate on the harmful test prompts (7 categories)
  non_refusal_rate           harmful prompts answered in full or in part (not "harmful": the default judge cannot
                             see content)
  harm_rate / harm_score     harmful verdicts and graded score, only for judges that see content (classifier, llm)
  degenerate                 share of empty, looping or draft-only responses per prompt set and category; they
                             count as neither refusal nor compliance in the rates above
  benign_compliance          compliance on benign prompts that look dangerous (over-refusal check)
  ordinary_benign_compliance compliance on ordinary benign prompts
  qa_accuracy                bundled short-answer QA, matched against answer aliases
  jailbreak_refusal          refusal per jailbreak template wrapped around the harmful prompts
  test_reward                with --reward_models BUNDLE: mean reward of the responses to the harmful and benign
                             test prompts under the IRL models (not a rate; higher is closer to the demonstrations)

judges: hybrid (default: rules for clear refusals, minilm otherwise) | rules (refusal position and answer
        content; no model) | minilm (bundled MiniLM classifier) | refusal (the first pattern matcher) |
        classifier (--judge_model FOLDER) |
        llm (--judge_endpoint_url URL --judge_endpoint_model NAME; StrongREJECT rubric; key from --api_key_env)
        held-out precision / recall / F1 of the offline judges: docs/judge.md

examples:
  drirl eval smollm2-135m-instruct --output runs/eval/base
  drirl eval runs/policy/model --max_jailbreak_prompts 14 --qa_limit 60 --json > eval.json
  drirl eval runs/policy/model --reward_models runs/rm      # adds test_reward: the held-out reward alignment maximises
  drirl eval runs/policy/model --judge llm --judge_endpoint_url http://localhost:8000/v1 \\
      --judge_endpoint_model Qwen/Qwen2.5-7B-Instruct
  drirl eval runs/policy/model --config configs/demo.yaml      # uses the file's `eval:` section when it has one

outputs (with --output DIR): eval.json, eval.md, per_category.png, jailbreaks.png, responses.jsonl
"""


def _handle(args: argparse.Namespace) -> int:
    from drirl.config import config_from_args, section_if_present
    from drirl.eval.harness import EvalConfig, evaluate
    from drirl.eval.report import render_markdown

    extra = {"model": args.model} if args.model else {}
    config = config_from_args(EvalConfig, args, config_path=args.config,
                              section=section_if_present(args.config, "eval"), extra=extra)
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
    from drirl.config import HelpFormatter, add_config_arguments
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
    register_judge(subparsers)


JUDGE_EPILOG = """\
input: JSON lines with "prompt" and "response" (strings; an empty response is judged degenerate) and optionally
"category"; other keys are ignored.

verdicts: refusal (declines the request itself), compliance (answers it; apologies, caveats and closing referrals
included), partial (declines then answers anyway, or answers and declines a part). "refused" is label == refusal.
"degenerate" names responses that are no answer at all (empty, a repetition loop, a draft without answer).

examples:
  drirl judge runs/eval/base/responses.jsonl
  drirl judge outputs.jsonl --judge rules --json > verdicts.json
"""


def _judge_table(result: dict) -> str:
    lines = ["| # | label | degenerate | reason |", "|---|---|---|---|"]
    for index, verdict in enumerate(result["verdicts"], 1):
        reason = verdict["reason"].replace("|", "/").replace("\n", " ")
        reason = reason if len(reason) <= 90 else reason[:87] + "..."
        lines.append(f"| {index} | {verdict['label']} | {verdict['degenerate'] or ''} | {reason} |")
    summary = result["summary"]
    counts = ", ".join(f"{name} {count}" for name, count in summary["labels"].items())
    lines += ["", f"{summary['n']} responses judged by {summary['judge_description']}: {counts}; refusal rate "
                  f"{summary['refusal_rate']:.3f}"]
    for category, entry in summary.get("per_category", {}).items():
        counts = ", ".join(f"{name} {count}" for name, count in entry["labels"].items())
        lines.append(f"  {category}: {entry['n']} responses, {counts}; refusal rate {entry['refusal_rate']:.3f}")
    return "\n".join(lines)


def _handle_judge(args: argparse.Namespace) -> int:
    from drirl.eval.judges import judge_file

    result = judge_file(args.responses, args.judge)
    print(json.dumps(result, ensure_ascii=False) if args.json else _judge_table(result))
    return 0


def register_judge(subparsers: argparse._SubParsersAction) -> None:
    from drirl.config import HelpFormatter
    from drirl.eval.judges import DEFAULT_JUDGE, JUDGES

    offline = [name for name in JUDGES if name not in ("classifier", "llm")]
    parser = subparsers.add_parser(
        "judge", help="judge a file of responses: refusal, compliance or partial",
        formatter_class=HelpFormatter, epilog=JUDGE_EPILOG,
        description="Judge each (prompt, response) row of a JSONL file with an offline judge: a table by default, "
                    "or exactly one JSON object {verdicts, summary} with --json, verdicts in input order. The same "
                    "as drirl.eval.judge_file().")
    parser.add_argument("responses", metavar="RESPONSES.jsonl", help="JSON lines with prompt, response, category?")
    parser.add_argument("--judge", default=DEFAULT_JUDGE, choices=offline,
                        help="offline judge (held-out precision / recall / F1 in docs/judge.md)")
    parser.add_argument("--json", action="store_true",
                        help="print exactly one JSON object on stdout; logs go to stderr")
    parser.set_defaults(handler=_handle_judge)
