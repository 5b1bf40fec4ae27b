"""The `drirl` command line: a thin layer over the Python API, one subcommand per pipeline stage.

Each command group has a module in :mod:`drirl.commands` with ``register(subparsers)``; heavy imports (torch,
transformers) happen inside the handlers so that ``drirl --help`` stays instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from drirl import __version__
from drirl.config import HelpFormatter
from drirl.errors import DrirlError

EPILOG = """\
The pipeline (see the README):
  drirl data stats                       # the bundled 7-category demonstration set
  drirl reward train --output runs/rm    # one reward model per category, by inverse RL
  drirl align --reward_models runs/rm --output runs/policy   # GRPO with dynamic reward scaling
  drirl eval runs/policy/model           # refusal, over-refusal, usefulness
  drirl run configs/demo.yaml            # all of it, resumable
  drirl demo                             # the embedded default: SmolLM2 on the CPU, no network
"""


def _models_prepare(args: argparse.Namespace) -> int:
    from drirl.models import prepare_bundled_models

    paths = prepare_bundled_models()
    if args.json:
        print(json.dumps(paths))
    else:
        for alias, path in paths.items():
            print(f"{alias:24s} {path}")
    return 0


def _register_models(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models", help="prepare the bundled models", formatter_class=HelpFormatter,
        description="Manage models. `prepare` converts the bundled SmolLM2-135M-Instruct GGUF into a normal "
                    "transformers folder once (cached under $DRIRL_CACHE, default ~/.cache/drirl) and locates the "
                    "bundled MiniLM text encoder.",
        epilog="example:\n  drirl models prepare --json")
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    prepare = sub.add_parser("prepare", help="convert and cache the bundled models; print their paths",
                             formatter_class=HelpFormatter,
                             epilog='example:\n  drirl models prepare --json\n'
                                    '  {"smollm2-135m-instruct": "...", "minilm": "..."}')
    prepare.add_argument("--json", action="store_true", help="print one JSON object alias -> path on stdout")
    prepare.set_defaults(handler=_models_prepare)


def quiet_dependencies() -> None:
    """Hide what the libraries underneath print for their own maintainers (deprecation and future warnings,
    weight-loading reports and bars); ``--log-level DEBUG`` shows them again."""
    import warnings

    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=".*(deprecated|will be removed).*")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("transformers", "trl", "peft", "accelerate", "datasets", "sentence_transformers", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="drirl", formatter_class=HelpFormatter,
        description="Align a chat LLM for safety from demonstrations with DR-IRL: balanced Chain-of-Draft "
                    "demonstrations in seven harm categories, one reward model per category learned by inverse RL, "
                    "then GRPO whose advantages are scaled by each sample's difficulty.",
        epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"drirl {__version__}")
    parser.add_argument("--log-level", default=os.environ.get("DRIRL_LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"], help="logging verbosity (default: INFO)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    _register_models(subparsers)
    from drirl.commands import align as align_commands
    from drirl.commands import data as data_commands
    from drirl.commands import eval as eval_commands
    from drirl.commands import reward as reward_commands
    from drirl.commands import run as run_commands

    for module in (data_commands, reward_commands, align_commands, eval_commands, run_commands):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=getattr(logging, args.log_level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("httpx", "urllib3", "filelock", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.log_level != "DEBUG":
        quiet_dependencies()
    from drirl import distributed

    # Under torchrun / accelerate launch: the process group and this process's GPU before any model loads.
    distributed.setup()
    try:
        return int(args.handler(args) or 0)
    except DrirlError as err:
        print(f"drirl: error: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # `drirl ... | head`: the reader left; nothing more to say
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("drirl: interrupted; rerun the same command to resume (finished stages and checkpoints are kept)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
