"""`drirl align`: GRPO with dynamic reward scaling from a config."""

from __future__ import annotations

import argparse

EXAMPLE = """\
examples:
  drirl align --reward_models runs/rm --output runs/policy --max_steps 30
  drirl align --config configs/demo.yaml --reward_models runs/rm --output runs/policy --scaling_mode none  # plain GRPO
  drirl align --config configs/demo.yaml --reward_models runs/rm --output runs/policy --resume   # after a crash
  accelerate launch --config_file configs/accelerate/deepspeed_zero2.yaml -m drirl.cli align --config CONFIG
"""


def _run(args: argparse.Namespace) -> int:
    from drirl.align.recipe import AlignConfig, run_align
    from drirl.config import config_from_args, section_if_present

    section = args.section or section_if_present(args.config, "align")
    config = config_from_args(AlignConfig, args, config_path=args.config, section=section)
    path = run_align(config, resume=args.resume)
    print(path)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from drirl.align.recipe import AlignConfig
    from drirl.config import add_config_arguments

    parser = subparsers.add_parser(
        "align", help="GRPO-S: GRPO whose advantages are scaled by each sample's difficulty",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Align a policy with GRPO-S (METHOD.md §2.4): for each prompt, G completions are scored by its "
                    "category's reward model; advantages are multiplied by α = α^D·α^M, the data-level hardness "
                    "(distance to the demonstration in a text encoder's space) times the model-level "
                    "responsiveness (reward gap to the demonstration). Checkpoints every --save_steps; the final "
                    "policy (LoRA merged) is written to OUTPUT/model with the training curves.",
        epilog=EXAMPLE)
    parser.add_argument("--config", help="YAML file with AlignConfig fields (top level or under --section)")
    parser.add_argument("--section", default=None,
                        help="read this section of the YAML (default: 'align' when the file has one)")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint in OUTPUT")
    add_config_arguments(parser, AlignConfig)
    parser.set_defaults(handler=_run)
