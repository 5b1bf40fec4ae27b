"""`drirl run CONFIG` and `drirl demo`."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

from drirl.distributed import is_main
from drirl.errors import COMMAND_LINE, ConfigError

RUN_EXAMPLE = """\
examples:
  drirl run configs/compare_all.yaml
  drirl run configs/demo.yaml --set run.output=runs/mine --set align.max_steps=50
  drirl run configs/demo.yaml        # again after a crash: finished stages are skipped, alignment resumes
  drirl run configs/demo.yaml --plan # each stage, reused or not, and its settings; runs nothing
"""
DEMO_EXAMPLE = """\
example:
  drirl demo                       # writes runs/demo, prints the model folder last
  drirl demo --output /tmp/demo --set align.max_steps=10
"""


def _methods_text() -> str:
    from drirl.pipeline import BUILTIN_METHODS

    width = max(map(len, BUILTIN_METHODS))
    lines = ["methods (run.methods):"]
    lines += [f"  {name:<{width}}  {method.description}" for name, method in BUILTIN_METHODS.items()]
    lines += ["  define more in the YAML file, e.g.",
              "    run: {custom_methods: {dr-irl-tight: {extends: dr-irl, align: {alpha_min: 0.8, alpha_max: 1.25}}}}",
              "  a section key a method fixes (align.scaling_mode for dr-irl) set to another value is an error:",
              "  define a method instead. run.seeds: [0, 1, 2] trains and evaluates every trained method per seed."]
    return "\n".join(lines) + "\n"


def demo_config_path() -> Path:
    return Path(str(resources.files("drirl") / "configs" / "demo.yaml"))


def _parse_sets(values: list[str]) -> dict[str, dict]:
    import yaml

    overrides: dict[str, dict] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set expects SECTION.KEY=VALUE, got {item!r}", file=COMMAND_LINE)
        overrides.setdefault(section, {})[name] = yaml.safe_load(raw)
    return overrides


def _run(args: argparse.Namespace) -> int:
    from drirl.pipeline import format_plan, load_pipeline_config, plan_pipeline, run_pipeline

    config = load_pipeline_config(args.config, _parse_sets(args.set))
    if args.plan:
        print(format_plan(config, plan_pipeline(config)), end="")
        return 0
    root = run_pipeline(config)
    if is_main():  # the headline on the terminal, then one line on stdout, however many processes ran
        _print_headline(root)
        print(root / "report.md")
    return 0


def _print_headline(root: Path) -> None:
    import json

    from drirl.report import headline_table

    print(headline_table(json.loads((root / "report.json").read_text())), file=sys.stderr)


def _demo(args: argparse.Namespace) -> int:
    from drirl.pipeline import load_pipeline_config, run_pipeline

    overrides = _parse_sets(args.set)
    overrides.setdefault("run", {})["output"] = args.output
    config = load_pipeline_config(args.config or demo_config_path(), overrides)
    root = run_pipeline(config)
    if is_main():
        _print_headline(root)
        print(f"report: {root / 'report.md'}", file=sys.stderr)
        print(root / "model")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run", help="the whole pipeline from one YAML file, resumable",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Data → reward models → alignment → evaluation → report. The YAML file has a `run:` section "
                    "(output, policy, data, methods, custom_methods, seeds) and one section per stage (`reward:`, "
                    "`align:`, `eval:`, `sft:`, `dpo:`, `bon:`) holding that stage's config fields. Each stage "
                    "writes its own folder with a stage.json; finished stages are skipped on a rerun and alignment "
                    "resumes from its last checkpoint when that checkpoint was written with the same settings. "
                    "Ends with report.md / report.json and plots.",
        epilog=RUN_EXAMPLE + "\n" + _methods_text())
    run.add_argument("config", help="pipeline YAML file")
    run.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override one field, e.g. --set align.max_steps=50 (repeatable)")
    run.add_argument("--plan", action="store_true",
                     help="print each stage, whether it will be reused (its stage.json matches) and its resolved "
                          "settings that differ from the defaults; run nothing")
    run.set_defaults(handler=_run)

    demo = subparsers.add_parser(
        "demo", help="the embedded default: SmolLM2-135M on the CPU, bundled data, no network",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run DR-IRL end to end on the embedded default: SmolLM2-135M-Instruct (bundled), the bundled "
                    "7-category demonstrations, MiniLM as text encoder, on the CPU, with no network. Compares the "
                    "base model with the DR-IRL model and writes the aligned model (LoRA merged, with a model card), "
                    "report.md and report.json. Prints the model folder last.",
        epilog=DEMO_EXAMPLE)
    demo.add_argument("--output", default="runs/demo", help="run folder (default: runs/demo)")
    demo.add_argument("--config", default=None, help="another pipeline YAML instead of the bundled demo config")
    demo.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                      help="override one field (repeatable)")
    demo.set_defaults(handler=_demo)
