"""`drirl reward ...`: train a bundle of category reward models by inverse RL, evaluate it on held-out pairs."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from pathlib import Path
from typing import Any

from drirl.config import HelpFormatter, section_if_present

DESCRIPTION = """\
Stage 2 of the pipeline: one reward model per harm category (METHOD.md §2.3), learned by maximum-likelihood
inverse RL. The demonstration of a training prompt is the positive, a sample of the policy for the same prompt the
negative; each category's model (a LoRA adapter with its scalar head over one shared backbone, or a full model) is
fitted with the Bradley-Terry loss on its category's pairs only. The result is a bundle folder that
`drirl align --reward_models` routes by each prompt's category."""

EPILOG = """\
examples:
  drirl reward train --output runs/rm                       # bundled data, SmolLM2, LoRA, one model per category
  drirl reward eval runs/rm                                 # held-out pairwise accuracy + cross-category heatmap
  drirl reward eval runs/rm --json > rm_eval.json
"""

TRAIN_EPILOG = """\
variants (--variant):
  demo-vs-policy  demonstration vs a sample of the (current) policy       (DR-IRL, default)
  init-demo       demonstration vs a sample of the initial model
  sft-demo        demonstration vs a sample of an SFT policy trained on the demonstrations
  init-sft        sample of the SFT policy vs sample of the initial model (AfD; keeps style out of the reward)
  (sft-demo and init-sft train their own SFT policy unless --sft_policy names one)

negatives (--negatives):
  policy          the policy's samples as they come (default)
  controlled      one form and length on both sides, only the decision differs: compliant samples wrapped in the
                  demonstration's Draft/Answer form (harmful prompts), refusals in the demonstration's form (benign
                  prompts), another prompt's demonstration (relevance); --init_from_pooled starts each category's
                  model from one pooled model

examples:
  drirl reward train --output runs/rm
  drirl reward train --output runs/rm_single --per_category false          # the single-reward-model ablation
  drirl reward train --config configs/demo.yaml --output runs/rm --categories crime,privacy,benign
  drirl reward train --output runs/rm_full --mode full --learning_rate 1e-5 --policy runs/sft
  drirl reward train --config configs/demo.yaml --output runs/rm_dec --negatives controlled --negatives_per_prompt 2

An interrupted run resumes from <output>.partial (finished models are kept) when rerun with the same settings.
Negatives are cached under $DRIRL_CACHE/negatives (or --negatives_cache), keyed by policy and sampling settings.
"""

EVAL_EPILOG = """\
what it measures:
  pairwise accuracy   fraction of held-out (test-split) pairs where R_c(prompt, demonstration) >
                      R_c(prompt, policy sample), for the model of each category c on the pairs of c
  cross-category      model a on the pairs of category b, for every model of the bundle: a strong diagonal
                      means each model learned its own category
  decision accuracy   test pairs of one form and length that differ only in the decision: on harmful prompts the
                      demonstration vs a compliant policy sample in the demonstration's draft; on benign prompts
                      the demonstration vs a refusal in its form. Share where the safe side wins, per category,
                      pooled ("harmful", "benign", "borderline"), and as a cross-category matrix

examples:
  drirl reward eval runs/rm
  drirl reward eval runs/rm --data data/balanced.jsonl --negatives_per_prompt 2 --heatmap rm_cross.png
  drirl reward eval runs/rm --json
  {"pairwise_accuracy": {"crime": 0.93, ...}, "mean_pairwise_accuracy": 0.9, "cross_category": {...},
   "heatmap": "runs/rm/cross_category.png", "pairs": {"crime": 8, ...},
   "decision_accuracy": {"harmful": 0.9, "benign": 0.88, "borderline": 0.85, "per_category": {...}},
   "decision_cross_category": {...}, "decision_pairs": {"crime": 7, ...}}
"""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def metrics_table(manifest: dict[str, Any]) -> str:
    """One line per model of a bundle: pairs, steps, loss, last logged accuracy and margin, seconds."""
    header = f"{'model':16s} {'prompts':>7s} {'pairs':>6s} {'steps':>6s} {'loss':>7s} {'acc':>6s} {'margin':>7s} " \
             f"{'secs':>6s}"
    lines = [header, "-" * len(header)]
    for name, entry in manifest["models"].items():
        m = entry.get("metrics") or {}
        lines.append(f"{name:16s} {_fmt(entry.get('prompts')):>7s} {_fmt(m.get('train_pairs')):>6s} "
                     f"{_fmt(m.get('optimizer_steps')):>6s} {_fmt(m.get('train_loss'), 4):>7s} "
                     f"{_fmt(m.get('train_accuracy_last_log'), 2):>6s} {_fmt(m.get('train_margin_last_log'), 3):>7s} "
                     f"{_fmt(m.get('train_seconds'), 1):>6s}")
    return "\n".join(lines)


def accuracy_table(result: dict[str, Any]) -> str:
    """Per-category pairwise accuracy, then the cross-category matrix (rows: models, columns: categories)."""
    categories = result["categories"]
    lines = [f"{'category':16s} {'pairs':>6s} {'accuracy':>9s}", "-" * 33]
    for category in categories:
        lines.append(f"{category:16s} {result['pairs'].get(category, 0):>6d} "
                     f"{_fmt(result['pairwise_accuracy'].get(category)):>9s}")
    lines.append(f"{'mean':16s} {'':>6s} {_fmt(result['mean_pairwise_accuracy']):>9s}")
    lines.append("")
    lines += _matrix_lines("cross-category accuracy", categories, result["cross_category"])
    return "\n".join(lines)


def _matrix_lines(title: str, categories: list[str], matrix: dict[str, dict[str, Any]]) -> list[str]:
    """A cross-category matrix, one row per reward model, one column per category of pairs."""
    width = max(8, *(len(c) for c in categories))
    lines = [f"{title} (row: reward model, column: pairs of category)",
             f"{'model':16s} " + " ".join(f"{c[:width]:>{width}s}" for c in categories)]
    for model, row in matrix.items():
        lines.append(f"{model:16s} " + " ".join(f"{_fmt(row.get(c)):>{width}s}" for c in categories))
    return lines


def decision_table(result: dict[str, Any]) -> str:
    """Decision accuracy per category and pooled, then its cross-category matrix."""
    categories = result["categories"]
    decision = result["decision_accuracy"]
    lines = ["decision accuracy (test pairs of one form that differ only in the decision; the safe side must win)",
             f"{'category':16s} {'pairs':>6s} {'accuracy':>9s}", "-" * 33]
    for category in categories:
        lines.append(f"{category:16s} {result['decision_pairs'].get(category, 0):>6d} "
                     f"{_fmt(decision['per_category'].get(category)):>9s}")
    for key in ("harmful", "benign", "borderline"):
        lines.append(f"{key:16s} {'':>6s} {_fmt(decision.get(key)):>9s}")
    lines.append("")
    lines += _matrix_lines("cross-category decision accuracy", categories, result["decision_cross_category"])
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    """NaN (a category without pairs) becomes null: the output stays strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------- handlers
def train_handler(args: argparse.Namespace) -> int:
    from drirl.config import config_from_args
    from drirl.pipeline import reward_policy_steps
    from drirl.reward.bundle import read_manifest
    from drirl.reward.irl import RewardTrainConfig, train_reward_models

    config = config_from_args(RewardTrainConfig, args, config_path=args.config,
                              section=section_if_present(args.config, "reward"))
    # The trainer prints its log dicts on stdout; keep stdout for the summary below.
    with contextlib.redirect_stdout(sys.stderr):
        bundle = train_reward_models(config, **reward_policy_steps(config))
    manifest = read_manifest(bundle)
    print(f"reward-model bundle: {bundle}")
    print(f"variant {manifest['variant']}, mode {manifest['mode']}, "
          f"{'one model per category' if manifest['per_category'] else 'one model for all categories'}, "
          f"data hash {manifest['data_hash']}")
    print(metrics_table(manifest))
    return 0


def eval_handler(args: argparse.Namespace) -> int:
    from drirl.plots import plot_heatmap
    from drirl.reward.evaluate import HEATMAP_NAME, evaluate_bundle

    heatmap = Path(args.heatmap) if args.heatmap else Path(args.bundle) / HEATMAP_NAME
    # With --json, stdout carries exactly one JSON object: anything a library prints goes to stderr meanwhile.
    quiet = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with quiet:
        result = evaluate_bundle(args.bundle, data=args.data, negatives_per_prompt=args.negatives_per_prompt,
                                 negatives_cache=args.negatives_cache,
                                 max_prompts_per_category=args.max_prompts_per_category,
                                 batch_size=args.batch_size, bf16=args.bf16)
        plot_heatmap(result["cross_category"], result["categories"], heatmap)
    if args.json:
        print(json.dumps(_json_safe({
            "pairwise_accuracy": result["pairwise_accuracy"],
            "mean_pairwise_accuracy": result["mean_pairwise_accuracy"],
            "cross_category": result["cross_category"],
            "heatmap": str(heatmap),
            "pairs": result["pairs"],
            "decision_accuracy": result["decision_accuracy"],
            "decision_cross_category": result["decision_cross_category"],
            "decision_pairs": result["decision_pairs"],
        }), ensure_ascii=False))
    else:
        print(f"bundle {args.bundle}: {sum(result['pairs'].values())} held-out pairs (test split, "
              f"{args.negatives_per_prompt} sample(s) of {result['policy']} per prompt)")
        print(accuracy_table(result))
        print()
        print(decision_table(result))
        print(f"heatmap: {heatmap}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    from drirl.config import add_config_arguments
    from drirl.reward.irl import RewardTrainConfig

    parser = subparsers.add_parser("reward", help="stage 2: category reward models by inverse RL",
                                   formatter_class=HelpFormatter, description=DESCRIPTION, epilog=EPILOG)
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    train = sub.add_parser(
        "train", help="train one reward model per category (resumable)", formatter_class=HelpFormatter,
        description="Sample the policy's answers to the training prompts (the negatives, cached), then fit one "
                    "Bradley-Terry reward model per category on (demonstration, sample) pairs. Only the train "
                    "split is used. Prints the bundle path and each model's training metrics.",
        epilog=TRAIN_EPILOG)
    train.add_argument("--config", metavar="YAML", default=None,
                       help="YAML with RewardTrainConfig keys (or a pipeline file with a `reward:` section); "
                            "flags override it")
    add_config_arguments(train, RewardTrainConfig)
    train.set_defaults(handler=train_handler)

    ev = sub.add_parser(
        "eval", help="held-out pairwise accuracy per category and across categories",
        formatter_class=HelpFormatter,
        description="Score held-out pairs (a test-split demonstration vs a sample of the bundle's policy with the "
                    "bundle's sampling settings; samples cached) with every model of the bundle. Prints the "
                    "pairwise accuracy per category, the cross-category matrix, and saves it as a heatmap.",
        epilog=EVAL_EPILOG)
    ev.add_argument("bundle", metavar="BUNDLE", help="bundle folder written by `drirl reward train`")
    ev.add_argument("--json", action="store_true",
                    help="print exactly one JSON object on stdout (logs go to stderr)")
    ev.add_argument("--data", metavar="PATH", default=None,
                    help="examples (JSONL or datasets folder) whose test split is used; default: the bundle's "
                         "training file when it still exists, else the bundled test split")
    ev.add_argument("--heatmap", metavar="PNG", default=None,
                    help="where to save the cross-category heatmap (default: BUNDLE/cross_category.png)")
    ev.add_argument("--negatives_per_prompt", type=_positive_int, default=1, metavar="N",
                    help="policy samples per test prompt, one pair each (default: 1)")
    ev.add_argument("--max_prompts_per_category", type=_positive_int, default=None, metavar="N",
                    help="cap on test prompts per category (default: all)")
    ev.add_argument("--negatives_cache", metavar="DIR", default=None,
                    help="folder caching the policy samples (default: $DRIRL_CACHE/negatives)")
    ev.add_argument("--batch_size", type=_positive_int, default=16, metavar="N",
                    help="pairs per forward pass (default: 16)")
    ev.add_argument("--bf16", default="auto", choices=["auto", "true", "false"],
                    help="score in bfloat16: auto (where the hardware supports it natively), true or false")
    ev.set_defaults(handler=eval_handler)
