"""One-call GPU check (`make gpu-check`): the figures that say whether drirl's GPU path is fast, in one table.

Sections, each bounded by what is left of --budget-s (a section that fails or does not fit is a row saying so,
never the end of the check):

  rollout  new tokens/s of each rollout backend at 8 prompts × 8 generations × 128 new tokens
           (benchmarks/bench_rollout.py: dynamic cache, static cache, static cache + torch.compile, drirl's
           generator, vLLM when installed)
  step     seconds per GRPO step at that shape: TRL's GRPOTrainer as a user gets it, TRL's GRPOTrainer with drirl's
           GPU settings (policy in bf16, the fastest trainable rollout backend), and drirl's GRPOSTrainer with the
           same settings (benchmarks/bench_grpo_step.py); targets GRPO-S / TRL ≤ 1.05 and ≤ 1.5 s a step on an H100
  align    `drirl reward train` (a small bundle) then a 20-step `drirl align` in bf16 through the CLI
  memory   peak GPU memory of each section (torch.cuda.max_memory_allocated)

It prints one table last and writes gpu_check.json (and the rows as markdown) under --out.

  python benchmarks/gpu_check.py                          # on a GPU machine: ≤ 8 minutes
  python benchmarks/gpu_check.py --model PATH --text-encoder PATH   # models from folders (no bundled packages)
  python benchmarks/gpu_check.py --tiny                   # a tiny model on the CPU, about a minute (tests run it)
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TRAINABLE_BACKENDS = ("static+compile", "static", "dynamic")  # HF-generate backends GRPO can train with
STEP_TARGET_RATIO = 1.05
STEP_TARGET_SECONDS = 1.5


@dataclass
class Check:
    section: str
    item: str
    value: str
    target: str = ""
    status: str = ""  # "met", "missed", "failed", "skipped" or ""

    def row(self) -> str:
        return f"| {self.section} | {self.item} | {self.value} | {self.target} | {self.status} |"


def _load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _reason(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text[:140]}"


def policy_dtype_name(backend: str) -> str:
    """The dtype drirl loads a policy in here (``policy_dtype: auto``) for this rollout backend."""
    from drirl.align.recipe import policy_torch_dtype

    return str(policy_torch_dtype("auto", "auto", backend)).removeprefix("torch.")


def verdict(value: float, target: float) -> str:
    """'met' when ``value`` ≤ ``target`` (both are costs: seconds, ratios)."""
    return "met" if value <= target else "missed"


def pick_backend(rollout_rows: list[Any]) -> list[str]:
    """Trainable backends ordered by measured new tokens/s, fastest first; unmeasured ones last, in default order."""
    speed = {r.backend: r.new_per_s for r in rollout_rows if getattr(r, "new_per_s", None)}
    measured = sorted((b for b in TRAINABLE_BACKENDS if b in speed), key=lambda b: -speed[b])
    return measured + [b for b in TRAINABLE_BACKENDS if b not in measured]


class GPUMemory:
    """Peak GPU memory of a section, in GiB; None on a CPU."""

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda.is_available()

    def reset(self) -> None:
        import torch

        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        import torch

        return torch.cuda.max_memory_allocated() / 2**30 if self.cuda else None


# ------------------------------------------------------------------------------------------------ sections
def section_rollout(args: argparse.Namespace, checks: list[Check], details: dict[str, Any]) -> list[Any]:
    bench = _load("bench_rollout")
    backends = "dynamic,static,drirl" if args.tiny else "dynamic,static,static+compile,drirl,vllm"
    argv = ["--model", args.model, "--prompts", str(args.prompts), "--generations", str(args.generations),
            "--max-new-tokens", str(args.max_new_tokens), "--backends", backends, "--repeats", str(args.repeats)]
    rows, setup = bench.measure(bench.parse_args(argv))
    details["rollout"] = {"setup": setup, "rows": [asdict(r) | {"new_per_s": r.new_per_s} for r in rows]}
    for r in rows:
        if r.new_per_s is None:
            checks.append(Check("rollout", r.backend, "—", "", f"skipped: {r.note}" if r.note else "skipped"))
        else:
            note = f" (warm-up {r.warmup_seconds:.0f} s)" if r.warmup_seconds and r.warmup_seconds > 5 else ""
            checks.append(Check("rollout", f"{r.backend} new tokens/s", f"{r.new_per_s:,.0f}{note}"))
    return rows


def section_step(args: argparse.Namespace, backends: list[str], checks: list[Check],
                 details: dict[str, Any]) -> str | None:
    """Time TRL and GRPO-S on the first backend that trains; returns that backend."""
    bench = _load("bench_grpo_step")
    shape = dict(prompts=args.prompts, generations=args.generations, max_new_tokens=args.max_new_tokens)
    workdir = Path(tempfile.mkdtemp(prefix="step-", dir=args.work))
    for backend in backends:
        try:
            times = bench.compare(args.model, trainers=("trl", "grpo-s"), steps=args.steps, rounds=1,
                                  backend=backend, text_encoder=args.text_encoder, workdir=workdir, **shape)
        except Exception as err:  # e.g. a compile failure: try the next backend
            checks.append(Check("step", f"backend {backend}", "—", "", f"failed ({_reason(err)})"))
            details.setdefault("step_failures", {})[backend] = traceback.format_exc()
            continue
        trl, ours = statistics.median(times["trl"]), statistics.median(times["grpo-s"])
        details["step"] = {"backend": backend, "times": times}
        policy = f"{policy_dtype_name(backend)} policy, {backend}"
        checks.append(Check("step", f"TRL GRPOTrainer, {policy} (s/step)", f"{trl:.3f}"))
        gpu = GPUMemory().cuda  # the seconds target is an H100's: a CPU's figure is only printed
        checks.append(Check("step", f"GRPO-S, {policy} (s/step)", f"{ours:.3f}", f"≤ {STEP_TARGET_SECONDS} (H100)",
                            verdict(ours, STEP_TARGET_SECONDS) if gpu else "not judged on a CPU"))
        checks.append(Check("step", "GRPO-S / TRL step time", f"{ours / trl:.3f}", f"≤ {STEP_TARGET_RATIO}",
                            verdict(ours / trl, STEP_TARGET_RATIO)))
        return backend
    return None


def section_trl_defaults(args: argparse.Namespace, checks: list[Check], details: dict[str, Any]) -> None:
    bench = _load("bench_grpo_step")
    times = bench.compare(args.model, trainers=("trl-defaults",), steps=args.steps, rounds=1,
                          prompts=args.prompts, generations=args.generations, max_new_tokens=args.max_new_tokens,
                          text_encoder=args.text_encoder, workdir=Path(tempfile.mkdtemp(prefix="trl-", dir=args.work)))
    details["trl_defaults"] = times
    checks.append(Check("step", "TRL GRPOTrainer as a user gets it (s/step)",
                        f"{statistics.median(times['trl-defaults']):.3f}"))


def section_align(args: argparse.Namespace, backend: str, checks: list[Check], details: dict[str, Any]) -> None:
    from drirl.cli import main as drirl

    work = Path(tempfile.mkdtemp(prefix="align-", dir=args.work))
    bundle = work / "rm"
    started = time.perf_counter()
    code = drirl(["--log-level", "WARNING", "reward", "train", "--output", str(bundle), "--policy", args.model,
                  "--max_prompts_per_category", str(args.rm_prompts), "--num_train_epochs", "1",
                  "--negatives_per_prompt", "1", "--negative_max_new_tokens", str(args.max_new_tokens),
                  "--eval_max_prompts_per_category", "2", "--negatives_cache", str(work / "negatives")])
    rm_seconds = time.perf_counter() - started
    if code:
        raise RuntimeError(f"drirl reward train exited {code}")
    checks.append(Check("align", f"drirl reward train ({args.rm_prompts} prompts/category), s", f"{rm_seconds:.1f}"))
    output = work / "policy"
    started = time.perf_counter()
    code = drirl(["--log-level", "WARNING", "align", "--policy", args.model, "--reward_models", str(bundle),
                  "--output", str(output), "--max_steps", str(args.align_steps), "--bf16", args.bf16,
                  "--per_device_train_batch_size", str(args.prompts * args.generations),
                  "--num_generations", str(args.generations), "--max_completion_length", str(args.max_new_tokens),
                  "--rollout_backend", backend, "--text_encoder", args.text_encoder, "--save_steps", "1000",
                  "--logging_steps", "5"])
    wall = time.perf_counter() - started
    if code:
        raise RuntimeError(f"drirl align exited {code}")
    record = json.loads((output / "alignment.json").read_text())
    details["align"] = {"wall_seconds": wall, "alignment": {k: record.get(k) for k in
                                                            ("steps", "train_seconds", "reward_first", "reward_last")}}
    steps = record.get("steps") or args.align_steps
    checks.append(Check("align", f"drirl align, {steps} steps, bf16 {args.bf16}, {backend}: train s (s/step)",
                        f"{record['train_seconds']:.1f} ({record['train_seconds'] / steps:.2f})"))
    first, last = record.get("reward_first", float("nan")), record.get("reward_last", float("nan"))
    checks.append(Check("align", "reward first → last step", f"{first:.3f} → {last:.3f}"))


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct", help="policy: bundled alias or folder")
    parser.add_argument("--text-encoder", default="minilm", help="text encoder of α^D: 'minilm' or a folder")
    parser.add_argument("--tiny", action="store_true", help="a tiny random model on the CPU, small shapes")
    parser.add_argument("--budget-s", type=float, default=450.0, help="wall-clock budget of all sections")
    parser.add_argument("--steps", type=int, default=4, help="timed GRPO steps per trainer (one more is warm-up)")
    parser.add_argument("--align-steps", type=int, default=20, help="steps of the drirl align section")
    parser.add_argument("--rm-prompts", type=int, default=8, help="prompts per category of the reward bundle")
    parser.add_argument("--repeats", type=int, default=2, help="timed rollouts per backend")
    parser.add_argument("--bf16", default="true", help="bf16 setting of the drirl align section")
    parser.add_argument("--sections", default="rollout,step,trl-defaults,align",
                        help="comma-separated subset of rollout, step, trl-defaults, align")
    parser.add_argument("--out", default=os.environ.get("OUT") or "gpu-check", help="folder for gpu_check.json")
    args = parser.parse_args(argv)
    args.prompts, args.generations, args.max_new_tokens = (2, 4, 16) if args.tiny else (8, 8, 128)
    if args.tiny:
        args.bf16, args.steps, args.align_steps, args.rm_prompts, args.repeats = "false", 1, 2, 2, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    # Every model, bundle and checkpoint the check writes lives under one temporary folder, removed at the end.
    with tempfile.TemporaryDirectory(prefix="drirl-gpu-check-") as work:
        args.work = work
        return _check(args, argv)


def _check(args: argparse.Namespace, argv: list[str] | None) -> int:
    import torch

    started = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        sys.path.insert(0, str(REPO / "tests"))
        from tiny_models import build_causal_lm

        args.model = str(build_causal_lm(Path(args.work) / "tiny-policy"))
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no GPU)"
    import transformers
    import trl

    checks: list[Check] = [Check("setup", "device", device),
                           Check("setup", "torch / transformers / trl",
                                 f"{torch.__version__} / {transformers.__version__} / {trl.__version__}"),
                           Check("setup", "shape", f"{args.prompts} prompts × {args.generations} generations × "
                                                   f"≤{args.max_new_tokens} new tokens")]
    details: dict[str, Any] = {"argv": argv if argv is not None else sys.argv[1:]}
    memory = GPUMemory()
    wanted = [s.strip() for s in args.sections.split(",") if s.strip()]
    # Rough share of the budget each section needs before it starts; a section that does not fit is skipped.
    needs = {"rollout": 0.0, "step": 60.0, "trl-defaults": 60.0, "align": 90.0}
    rollout_rows: list[Any] = []
    backend: str | None = None
    for section in wanted:
        left = args.budget_s - (time.perf_counter() - started)
        if left < needs.get(section, 0.0):
            checks.append(Check(section, "—", "—", "", f"skipped ({left:.0f} s of the budget left)"))
            continue
        memory.reset()
        began = time.perf_counter()
        try:
            if section == "rollout":
                rollout_rows = section_rollout(args, checks, details)
            elif section == "step":
                backend = section_step(args, pick_backend(rollout_rows), checks, details)
            elif section == "trl-defaults":
                section_trl_defaults(args, checks, details)
            elif section == "align":
                section_align(args, backend or pick_backend(rollout_rows)[0], checks, details)
            else:
                checks.append(Check(section, "—", "—", "", "unknown section"))
                continue
        except Exception as err:
            checks.append(Check(section, "—", "—", "", f"failed ({_reason(err)})"))
            details.setdefault("failures", {})[section] = traceback.format_exc()
        peak = memory.peak_gib()
        seconds = time.perf_counter() - began
        checks.append(Check(section, "section wall s" + (" / peak GPU memory GiB" if peak is not None else ""),
                            f"{seconds:.0f}" + (f" / {peak:.2f}" if peak is not None else "")))
        # Keep what finished, whatever happens next.
        (out / "gpu_check.json").write_text(json.dumps({"checks": [asdict(c) for c in checks], **details},
                                                       indent=1, default=str))
    total = time.perf_counter() - started
    checks.append(Check("total", "wall s", f"{total:.0f}", f"≤ {args.budget_s:.0f}"))
    table = "\n".join(["| section | item | value | target | status |", "|---|---|---|---|---|",
                       *(c.row() for c in checks)])
    (out / "gpu_check.json").write_text(json.dumps({"checks": [asdict(c) for c in checks], **details}, indent=1,
                                                   default=str))
    (out / "gpu_check.md").write_text(table + "\n")
    command = shlex.join(["python", "benchmarks/gpu_check.py", *(argv if argv is not None else sys.argv[1:])])
    print(f"\n{table}\n\nrerun: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
