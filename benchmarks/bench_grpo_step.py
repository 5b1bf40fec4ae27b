"""Step time of GRPO-S against plain TRL GRPOTrainer: same model, data, seed, batch shape and rollout backend.

The trainers run alternately (A B A B ...) for --rounds rounds of --steps steps each, so drift in machine load
hits both alike. The figure is the ratio of median step times (target ≤ 1.05: scaling costs ≤ 5% of a step).
The first step of every run (model warm-up, and the compilation of static+compile) is left out.

    python benchmarks/bench_grpo_step.py --model smollm2-135m-instruct --steps 3 --rounds 2
    python benchmarks/bench_grpo_step.py --shape gpu --backend static+compile   # 8 prompts x 8 generations x 128
    python benchmarks/bench_grpo_step.py --tiny           # a tiny offline model, seconds
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

SHAPES = {"demo": (2, 4, 64), "gpu": (8, 8, 128)}  # prompts, generations, max new tokens per step
TRAINERS = ("trl-defaults", "trl", "grpo-s")


class StepTimer(TrainerCallback):
    def __init__(self) -> None:
        self.times: list[float] = []
        self._start = 0.0

    def _sync(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self._start)


class LengthReward:
    """Cheap and deterministic, so the comparison measures the scaling's own cost, not a reward model's."""

    __name__ = "length_reward"

    def __call__(self, prompts, completions, **kwargs):
        return [len(c[-1]["content"] if isinstance(c, list) else c) / 100.0 for c in completions]

    def demonstration_reward(self, prompt, demonstration, category):
        return len(demonstration) / 100.0


def run(model: str, trainer: str, steps: int, *, prompts: int, generations: int, max_new_tokens: int,
        workdir: Path, backend: str = "dynamic", text_encoder: str = "minilm", reward_funcs: list[Any] | None = None
        ) -> list[float]:
    """Train ``steps`` steps with one trainer and return each step's seconds but the first.

    ``trl-defaults`` is TRL's GRPOTrainer as a user gets it (policy weights as saved, dynamic cache); ``trl`` is
    TRL's GRPOTrainer with drirl's loading and rollout backend; ``grpo-s`` is drirl's GRPOSTrainer (α^D and α^M)
    with the same settings, so ``grpo-s`` / ``trl`` is the cost of scaling alone.
    """
    from drirl.align.grpo_s import GRPOSTrainer
    from drirl.align.recipe import AlignConfig, build_dataset, build_grpo_config, load_prompts, policy_torch_dtype
    from drirl.models import load_causal_lm, load_tokenizer

    defaults = trainer == "trl-defaults"
    config = AlignConfig(output=str(workdir), policy=model, max_steps=steps,
                         scaling_mode="both" if trainer == "grpo-s" else "none",
                         per_device_train_batch_size=prompts * generations, num_generations=generations,
                         max_completion_length=max_new_tokens, save_steps=10_000, max_prompts=64, seed=0,
                         rollout_backend="dynamic" if defaults else backend, text_encoder=text_encoder,
                         policy_dtype="float32" if defaults else "auto")
    grpo_args = build_grpo_config(config, str(workdir / trainer))
    grpo_args.disable_tqdm = True
    tokenizer = load_tokenizer(model)
    timer = StepTimer()
    policy = load_causal_lm(model, tokenizer=tokenizer, dtype=policy_torch_dtype(config.policy_dtype, config.bf16,
                                                                                config.rollout_backend))
    common = dict(model=policy, reward_funcs=reward_funcs or [LengthReward()], args=grpo_args,
                  train_dataset=build_dataset(load_prompts(config)), processing_class=tokenizer, callbacks=[timer])
    if trainer == "grpo-s":
        GRPOSTrainer(**common).train()
    else:
        from trl import GRPOConfig, GRPOTrainer

        # Derived fields are recomputed by GRPOConfig itself; passing both raises.
        derived = {"generation_batch_size", "steps_per_generation"}
        plain = {k: getattr(grpo_args, k) for k, f in GRPOConfig.__dataclass_fields__.items()
                 if f.init and k not in derived}
        common["args"] = GRPOConfig(**{**plain, "output_dir": str(workdir / trainer)})
        plain_trainer = GRPOTrainer(**common)
        if getattr(grpo_args, "compile_generation", False):
            plain_trainer.generation_config.disable_compile = False  # what GRPOSTrainer does for this backend
        plain_trainer.train()
    return timer.times[1:] or timer.times  # the first step pays one-off warm-up


def compare(model: str, *, trainers: tuple[str, ...] = ("trl", "grpo-s"), steps: int = 3, rounds: int = 2,
            prompts: int = 2, generations: int = 4, max_new_tokens: int = 64, backend: str = "dynamic",
            text_encoder: str = "minilm", workdir: Path | None = None) -> dict[str, list[float]]:
    """Step times of each trainer, the trainers alternating round by round."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="bench-grpo-"))
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(rounds):
        for name in trainers:
            times[name] += run(model, name, steps + 1, prompts=prompts, generations=generations,
                               max_new_tokens=max_new_tokens, workdir=workdir, backend=backend,
                               text_encoder=text_encoder)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tiny", action="store_true", help="use a tiny offline model (tests/tiny_models.py)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="demo",
                        help="prompts x generations x new tokens per step: demo 2x4x64, gpu 8x8x128")
    parser.add_argument("--backend", default="dynamic", help="rollout backend: dynamic, static, static+compile, vllm")
    parser.add_argument("--with-defaults", action="store_true", help="also time TRL as a user gets it")
    parser.add_argument("--text-encoder", default="minilm", help="text encoder of α^D (folder or 'minilm')")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-grpo-"))
    model = args.model
    if args.tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from tiny_models import build_causal_lm

        model = str(build_causal_lm(workdir / "tiny"))
    prompts, generations, new_tokens = SHAPES[args.shape]
    trainers = (("trl-defaults",) if args.with_defaults else ()) + ("trl", "grpo-s")
    times = compare(model, trainers=trainers, steps=args.steps, rounds=args.rounds, prompts=prompts,
                    generations=generations, max_new_tokens=new_tokens, backend=args.backend,
                    text_encoder=args.text_encoder, workdir=workdir)
    print(f"\nGRPO step time, {model}, {prompts} prompts x {generations} generations, ≤{new_tokens} new tokens, "
          f"rollout backend {args.backend}, {len(times['trl'])} timed steps each")
    print(f"{'trainer':34s} {'median s/step':>14s} {'min':>8s} {'max':>8s}")
    labels = {"trl-defaults": "TRL GRPOTrainer (defaults)", "trl": "TRL GRPOTrainer",
              "grpo-s": "drirl GRPOSTrainer (both)"}
    for key in trainers:
        print(f"{labels[key]:34s} {statistics.median(times[key]):14.3f} {min(times[key]):8.3f} "
              f"{max(times[key]):8.3f}")
    ratio = statistics.median(times["grpo-s"]) / statistics.median(times["trl"])
    print(f"step-time ratio GRPO-S / GRPO: {ratio:.3f} (target ≤ 1.05)")
    print("rerun: python benchmarks/bench_grpo_step.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
