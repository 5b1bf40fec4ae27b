"""The alignment recipe (stage 3, METHOD.md §2.4): GRPO-S (or plain GRPO) on the demonstrations' prompts, from one
flat config; `drirl align` runs it. The trainer itself is :class:`drirl.align.grpo_s.GRPOSTrainer`.

:class:`AlignConfig` holds what a user sets; :func:`build_grpo_config` turns it into TRL's config
(:class:`GRPOSConfig`), :func:`run_align` trains, checkpoints every ``save_steps``, resumes, and writes the final
policy (LoRA merged) as a normal transformers folder under ``<output>/model``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from drirl.align.settings import ScalingConfig, check_outlier_tau
from drirl.config import config_to_dict, help_field
from drirl.distributed import on_main
from drirl.errors import ConfigError, DataError
from drirl.io import atomic_write_json, atomic_write_text
from drirl.stages import last_complete_checkpoint, prepare_checkpoints, settings_hash
from drirl.trainer_setup import PolicyLoraSettings, check_report_to, report_to_field, use_concise_logging

logger = logging.getLogger(__name__)

SCALE_REWARDS = ("group", "batch", "none")


@dataclass
class AlignConfig(PolicyLoraSettings, ScalingConfig):
    """`drirl align` and the pipeline's ``align`` section. The scaling fields (``scaling_*``, ``alpha_min``,
    ``alpha_max``, ``text_encoder``) come from :class:`drirl.align.settings.ScalingConfig` and the LoRA fields from
    :class:`drirl.trainer_setup.PolicyLoraSettings`; both are validated when the config is built."""

    # Fields that do not change the trained policy (drirl.stages): checkpoints written before a change are resumed.
    RUN_ONLY_FIELDS: ClassVar[tuple[str, ...]] = ("output", "save_steps", "logging_steps", "report_to",
                                                  "encoder_batch_size")

    output: str | None = field(default=None, metadata=help_field("Run folder to write.", required=True))
    policy: str = field(default="smollm2-135m-instruct", metadata=help_field(
        "Policy to align (folder, hub id or bundled alias)."))
    reward_models: str | None = field(default=None, metadata=help_field(
        "Reward-model bundle from `drirl reward train` (category-routed IRL rewards)."))
    external_reward_model: str | None = field(default=None, metadata=help_field(
        "Instead of a bundle: one sequence-classification reward model for every prompt (the ablation)."))
    reward_fallback: Literal["error", "single", "mean"] = field(default="error", metadata=help_field(
        "What a prompt whose category has no model gets."))
    data: str | None = field(default=None, metadata=help_field(
        "Prompts with demonstrations (JSONL/datasets folder); default: the bundled set (train split only)."))
    taxonomy: str | None = field(default=None, metadata=help_field("Category taxonomy YAML; default: bundled."))
    include_benign: bool = field(default=True, metadata=help_field(
        "Train on benign prompts too, so helpfulness is rewarded alongside refusals."))
    max_prompts: int | None = field(default=None, metadata=help_field(
        "Use at most this many training prompts (balanced over categories, deterministic)."))
    eval_prompts: int = field(default=0, metadata=help_field(
        "Hold out this many train-split prompts (category-balanced, never trained on) and log their mean reward as "
        "`eval_reward` at the start and every eval_steps (log_history.json, training_curves.png). The training "
        "reward of a step depends mostly on which prompts it drew; this one watches the same prompts throughout."))
    eval_steps: int = field(default=10, metadata=help_field("Steps between held-out reward measurements."))
    max_steps: int = field(default=20, metadata=help_field("Optimizer steps."))
    learning_rate: float = field(default=5e-5, metadata=help_field(
        "Learning rate (TRL's default 1e-6 is far too small for short LoRA runs)."))
    per_device_train_batch_size: int = field(default=8, metadata=help_field(
        "Completions per device per step; must divide by num_generations. Prompts per step = this × processes × "
        "gradient_accumulation_steps / num_generations (e.g. 16 with num_generations 8: two prompts per step)."))
    gradient_accumulation_steps: int = field(default=1, metadata=help_field(
        "Gradient accumulation steps; TRL generates one batch of groups per optimizer step, so this also "
        "multiplies the prompts of a step."))
    num_generations: int = field(default=4, metadata=help_field(
        "G: completions per prompt. Larger groups (8) give fewer all-equal-reward groups, whose advantage is 0."))
    max_completion_length: int = field(default=64, metadata=help_field("Max new tokens per completion."))
    temperature: float = field(default=1.0, metadata=help_field("Sampling temperature of rollouts."))
    lr_scheduler_type: Literal["linear", "cosine", "constant", "constant_with_warmup", "polynomial", "inverse_sqrt"] = \
        field(default="linear", metadata=help_field(
        "transformers scheduler: linear (decays to 0 at max_steps), constant, constant_with_warmup (a constant "
        "rate after warm-up, so the last steps still learn), cosine, ..."))
    warmup_steps: float = field(default=0.0, metadata=help_field(
        "Warm-up of the learning rate: a number >= 1 is steps, one below 1 a fraction of max_steps."))
    scale_rewards: Literal["group", "batch", "none"] = field(default="group", metadata=help_field(
        "TRL's advantage scaling: group (divide by each group's reward std, the paper's A_i), batch (by the std "
        "of the whole batch, so a group whose rewards barely differ gets small advantages instead of amplified "
        "noise) or none."))
    mask_truncated_completions: bool = field(default=False, metadata=help_field(
        "Leave completions cut off at max_completion_length out of the loss (DAPO), so a draft truncated "
        "before its answer is not scored as if it were the answer."))
    beta: float = field(default=0.0, metadata=help_field(
        "KL coefficient β to the reference policy (0: no KL). The reference is the policy training starts from "
        "(with LoRA, the model with its adapters disabled): β > 0 anchors GRPO to the base model when it starts "
        "from the base model, and to the SFT warm start when it starts from there."))
    epsilon: float = field(default=0.2, metadata=help_field("PPO-style clip range of the ratio."))
    loss_type: str = field(default="dapo", metadata=help_field("TRL loss_type: grpo, dapo, dr_grpo, bnpo."))
    merge_lora: bool = field(default=True, metadata=help_field("Merge LoRA into the saved model."))
    bf16: str = field(default="auto", metadata=help_field("true, false or auto."))
    gradient_checkpointing: bool = field(default=False, metadata=help_field("Trade compute for memory."))
    rollout_backend: Literal["dynamic", "static", "static+compile", "vllm"] = field(
        default="dynamic", metadata=help_field(
            "How rollouts are generated: dynamic (transformers `generate` with its default dynamic KV cache), "
            "static (a preallocated KV cache of fixed shape), static+compile (static cache with the decoding step "
            "compiled by torch.compile: several times faster on a GPU after a compile of ~1 min, slower on a CPU), "
            "vllm (colocated vLLM; GPU, needs the vllm extra). `make gpu-check` measures each."))
    policy_dtype: Literal["auto", "float32", "bfloat16"] = field(default="auto", metadata=help_field(
        "Dtype the policy's weights are loaded in: auto is bfloat16 on a GPU when bf16 is on (the KV cache and the "
        "compute share it, which static-cache generation needs) and float32 on a CPU (bf16 runs there under "
        "autocast, and LoRA adapters stay float32 either way)."))
    save_steps: int = field(default=10, metadata=help_field("Checkpoint every N steps (resume with --resume)."))
    logging_steps: int = field(default=1, metadata=help_field("Log every N steps."))
    report_to: str = report_to_field()
    system_prompt: str | None = field(default=None, metadata=help_field("System prompt; default: template's."))
    seed: int = field(default=0, metadata=help_field("Seed."))
    trl_args: dict = field(default_factory=dict, metadata=help_field(
        "Any other GRPOConfig field, passed through (e.g. {top_p: 0.9})."))
    trust_remote_code: bool = field(default=False, metadata=help_field("Allow model code from the model folder."))
    allow_pickle: bool = field(default=False, metadata=help_field("Allow pickle-based (.bin) weights."))

    def __post_init__(self) -> None:
        self.check_scaling()
        self.check_lora()
        check_report_to(self.report_to)
        check_outlier_tau(self.scaling_outlier_tau, self.scaling_outlier_tau_relative, self.num_generations)
        if self.scale_rewards not in SCALE_REWARDS:
            raise ConfigError(f"must be one of {', '.join(SCALE_REWARDS)}, got {self.scale_rewards!r}",
                              key="scale_rewards")
        if not self.warmup_steps >= 0:
            raise ConfigError(f"must be >= 0, got {self.warmup_steps!r}", key="warmup_steps")
        if self.warmup_steps >= 1 and self.warmup_steps >= self.max_steps:
            raise ConfigError(f"{self.warmup_steps:g} warm-up steps leave none of the {self.max_steps} max_steps at "
                              "the set learning rate (warm-up starts at 0); lower warmup_steps or raise max_steps",
                              key="warmup_steps")
        if self.num_generations < 2:
            raise ConfigError(f"must be at least 2 (a group needs two completions to compare), got "
                              f"{self.num_generations}", key="num_generations")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.eval_prompts < 0 or self.eval_steps < 1:
            raise ValueError(f"eval_prompts must be >= 0 and eval_steps >= 1, got {self.eval_prompts} and "
                             f"{self.eval_steps}")
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(f"per_device_train_batch_size ({self.per_device_train_batch_size}) must be divisible "
                             f"by num_generations ({self.num_generations})")
        if self.reward_models and self.external_reward_model:
            raise ValueError("give reward_models or external_reward_model, not both")


def _balanced_pick(examples: list[Any], count: int, seed: int) -> list[Any]:
    """``count`` examples taken round-robin over categories after a seeded shuffle of each (deterministic)."""
    import random

    by_category: dict[str, list[Any]] = {}
    for example in sorted(examples, key=lambda e: e.id):
        by_category.setdefault(example.category, []).append(example)
    rng = random.Random(seed)
    for items in by_category.values():
        rng.shuffle(items)
    chosen: list[Any] = []
    while len(chosen) < min(count, len(examples)):  # round-robin keeps the categories balanced
        for items in by_category.values():
            if items and len(chosen) < count:
                chosen.append(items.pop())
    return chosen


def load_prompts(config: AlignConfig, *, held_out: bool = False) -> list[Any]:
    """Train-split examples with demonstrations, balanced over categories when capped.

    With ``config.eval_prompts``, that many are set aside first (``held_out=True`` returns them) and the training
    prompts come from the rest, so the two sets never share a prompt.
    """
    from drirl.data.schema import load_split, load_taxonomy

    taxonomy = load_taxonomy(config.taxonomy) if config.data and config.taxonomy else None
    examples = [e for e in load_split(config.data, "train", taxonomy=taxonomy, with_demonstration=True)
                if config.include_benign or e.category != "benign"]
    if not examples:
        raise DataError("no training prompts with demonstrations", file=config.data or "bundled data")
    evaluation: list[Any] = []
    if config.eval_prompts:
        if config.eval_prompts >= len(examples):
            raise DataError(f"eval_prompts ({config.eval_prompts}) leaves no training prompts: there are "
                            f"{len(examples)}", file=config.data or "bundled data")
        # A seed of its own: the held-out set stays the same whatever max_prompts is.
        evaluation = _balanced_pick(examples, config.eval_prompts, config.seed + 1)
        chosen_ids = {e.id for e in evaluation}
        examples = [e for e in examples if e.id not in chosen_ids]
    if held_out:
        return evaluation
    if config.max_prompts and len(examples) > config.max_prompts:
        examples = _balanced_pick(examples, config.max_prompts, config.seed)
    return examples


def build_dataset(examples: list[Any], system_prompt: str | None = None):
    from datasets import Dataset

    from drirl.generation import as_messages

    return Dataset.from_list([{"prompt": as_messages(e.prompt, system_prompt), "category": e.category,
                               "demonstration": e.demonstration, "example_id": e.id} for e in examples])


def build_reward_funcs(config: AlignConfig) -> list[Any]:
    if config.reward_models:
        from drirl.reward.bundle import CategoryRewardModels

        return [CategoryRewardModels(config.reward_models, fallback=config.reward_fallback, bf16=config.bf16,
                                     allow_pickle=config.allow_pickle)]
    if config.external_reward_model:
        from drirl.align.external import ExternalRewardModel

        return [ExternalRewardModel(config.external_reward_model, bf16=config.bf16,
                                    allow_pickle=config.allow_pickle)]
    raise ConfigError("missing required field: give reward_models (a bundle) or external_reward_model",
                      key="reward_models")


def rollout_arguments(backend: str) -> dict[str, Any]:
    """GRPOConfig fields that select a rollout backend (see ``AlignConfig.rollout_backend``)."""
    if backend == "vllm":
        return {"use_vllm": True}
    if backend == "static":
        return {"cache_implementation": "static"}
    if backend == "static+compile":
        # Prompts padded to a multiple of 128 tokens: the compiled decoding step is specialised on the cache's
        # length, so a handful of prompt-length buckets means a handful of compilations instead of one per batch.
        return {"cache_implementation": "static", "compile_generation": True, "pad_to_multiple_of": 128}
    if backend == "dynamic":
        return {}
    raise ConfigError(f"unknown rollout backend {backend!r}; choose dynamic, static, static+compile or vllm",
                      key="rollout_backend")


def policy_torch_dtype(setting: str, bf16: bool | str, rollout_backend: str = "dynamic") -> Any:
    """The dtype to load the policy in. ``auto``: bfloat16 when bf16 resolves on and either the device is a GPU or
    the rollouts use a static KV cache; float32 otherwise.

    A static cache takes the weights' dtype while bf16 autocast computes keys and values in bfloat16, so float32
    weights under bf16 fail in the cache update (on a GPU and on a CPU with native bf16 alike). With a dynamic cache
    a CPU keeps float32 weights and runs bf16 under autocast, where that is native; LoRA adapters stay float32.
    """
    import torch

    from drirl.trainer_setup import has_cuda, resolve_bf16

    if setting == "float32":
        return torch.float32
    if setting == "bfloat16":
        return torch.bfloat16
    if setting != "auto":
        raise ConfigError(f"must be auto, float32 or bfloat16, got {setting!r}", key="policy_dtype")
    static_cache = rollout_backend in ("static", "static+compile")
    return torch.bfloat16 if resolve_bf16(bf16) and (has_cuda() or static_cache) else torch.float32


def check_bundle_covers(reward_funcs: list[Any], examples: list[Any]) -> None:
    """Route every category of the training prompts through each category-routed reward function now: a bundle
    trained on other data, with no model for a category and ``reward_fallback: error``, fails here (DataError
    naming the category and the bundle's models) instead of at the first reward, after the policy has loaded."""
    categories = sorted({e.category for e in examples})
    for func in reward_funcs:
        if hasattr(func, "route"):
            for category in categories:
                func.route(category)


def build_grpo_config(config: AlignConfig, output_dir: str):
    from dataclasses import fields

    from drirl.align.grpo_s import GRPOSConfig
    from drirl.trainer_setup import trainer_arguments

    known = {f.name for f in fields(GRPOSConfig)}
    unknown = sorted(set(config.trl_args) - known)
    if unknown:
        raise ConfigError(f"unknown GRPOConfig field(s): {', '.join(unknown)}", key="trl_args")
    kwargs = trainer_arguments(
        output_dir, seed=config.seed, learning_rate=config.learning_rate, bf16=config.bf16,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, max_steps=config.max_steps,
        logging_steps=config.logging_steps, save_steps=config.save_steps, report_to=config.report_to,
        gradient_checkpointing=config.gradient_checkpointing)
    if config.eval_prompts:
        kwargs.update(eval_strategy="steps", eval_steps=config.eval_steps, eval_on_start=True,
                      per_device_eval_batch_size=config.per_device_train_batch_size)
    kwargs.update(
        num_generations=config.num_generations, max_completion_length=config.max_completion_length,
        temperature=config.temperature, beta=config.beta, epsilon=config.epsilon, loss_type=config.loss_type,
        log_completions=False, remove_unused_columns=False, **rollout_arguments(config.rollout_backend),
        scale_rewards=config.scale_rewards, mask_truncated_completions=config.mask_truncated_completions,
        lr_scheduler_type=config.lr_scheduler_type, warmup_steps=config.warmup_steps,
        **config.scaling_settings().__dict__,
        model_init_kwargs={"trust_remote_code": config.trust_remote_code},
        # the last checkpoint is what --resume needs; older ones only cost disk
        save_total_limit=2,
    )
    kwargs.update(config.trl_args)
    return GRPOSConfig(**kwargs)


def last_checkpoint(folder: Path) -> str | None:
    """The newest complete GRPO-S checkpoint in ``folder`` (incomplete ones are removed): GRPOSTrainer writes its
    scaling state after everything else of a checkpoint, so that file marks completion."""
    from drirl.align.grpo_s import SCALING_STATE_FILE

    return last_complete_checkpoint(folder, SCALING_STATE_FILE)


def run_align(config: AlignConfig, *, resume: bool = False, reward_funcs: list[Any] | None = None,
              examples: list[Any] | None = None, held_out: list[Any] | None = None,
              text_encoder: Any = None, checkpoint_hash: str | None = None) -> Path:
    """Train, then save the merged policy to ``<output>/model``; returns that folder.

    ``examples`` and ``held_out`` replace the prompts :func:`load_prompts` would pick for training and for the
    held-out reward (``config.eval_prompts``)."""

    from drirl.align.grpo_s import GRPOSTrainer
    from drirl.models import fix_special_tokens, load_causal_lm, load_tokenizer
    from drirl.plots import plot_training_curves
    from drirl.trainer_setup import seed_everything

    if not config.output:
        raise ConfigError("missing required field", key="output")
    output = Path(config.output)
    final = output / "model"
    checkpoints = output / "checkpoints"
    seed_everything(config.seed)
    examples = examples if examples is not None else load_prompts(config)
    dataset = build_dataset(examples, config.system_prompt)
    eval_dataset = (build_dataset(held_out if held_out is not None else load_prompts(config, held_out=True),
                                  config.system_prompt) if config.eval_prompts else None)
    reward_funcs = reward_funcs if reward_funcs is not None else build_reward_funcs(config)
    check_bundle_covers(reward_funcs, examples)  # before the policy loads, not at the first reward
    tokenizer = load_tokenizer(config.policy, trust_remote_code=config.trust_remote_code)
    model = load_causal_lm(config.policy, trust_remote_code=config.trust_remote_code,
                           allow_pickle=config.allow_pickle, tokenizer=tokenizer,
                           dtype=policy_torch_dtype(config.policy_dtype, config.bf16, config.rollout_backend))
    args = build_grpo_config(config, str(checkpoints))
    peft_config = None
    if config.use_lora:
        peft_config = config.peft_lora_config("CAUSAL_LM", config.policy)
    trainer = GRPOSTrainer(model=model, reward_funcs=reward_funcs, args=args, train_dataset=dataset,
                           eval_dataset=eval_dataset, processing_class=tokenizer, peft_config=peft_config,
                           text_encoder=text_encoder)
    # Checkpoints written with other settings (another run's leftovers, a changed learning rate) are removed, never
    # resumed; done once every input has loaded, so a bad input leaves no folder behind.
    checkpoint_hash = checkpoint_hash or settings_hash(config)
    on_main(prepare_checkpoints, output, checkpoint_hash)
    checkpoint = last_checkpoint(checkpoints) if resume else None
    if resume and checkpoint is None:
        logger.info("--resume: no checkpoint in %s, starting from scratch", checkpoints)
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
        trainer.load_scaling_state(checkpoint)
    use_concise_logging(trainer)
    started = time.time()
    trainer.train(resume_from_checkpoint=checkpoint)
    seconds = time.time() - started
    history = trainer.state.log_history
    # Rank 0 writes every file, after every process finished training; the others wait for it.
    on_main(atomic_write_json, output / "log_history.json", history)
    on_main(plot_training_curves, history, output / "training_curves.png")

    trained = trainer.model
    if config.use_lora and config.merge_lora:
        trained = trained.merge_and_unload()
    fix_special_tokens(tokenizer, trained)
    on_main(_save_model, trained, tokenizer, final)
    rewards = [h["reward"] for h in history if "reward" in h]
    held_out_rewards = [{"step": h["step"], "reward": h["eval_reward"]} for h in history if "eval_reward" in h]
    record = {
        "method": "grpo-s" if config.scaling_mode != "none" else "grpo",
        "config": config_to_dict(config), "config_hash": checkpoint_hash,
        "train_prompts": len(examples), "steps": trainer.state.global_step, "train_seconds": round(seconds, 1),
        "reward_first": rewards[0] if rewards else None, "reward_last": rewards[-1] if rewards else None,
        "held_out_reward": held_out_rewards,
        # How often the α clip bound and the outlier mask fired, averaged over the logged steps (None: scaling off).
        "scaling_rates": {name: _mean_logged(history, f"scaling/{name}")
                          for name in ("fraction_clipped", "fraction_masked")},
        "scaling_state": trainer.scaling_state(),
    }
    on_main(atomic_write_json, output / "alignment.json", record)
    on_main(atomic_write_text, final / "README.md", align_model_card(config, record))
    logger.info("aligned policy written to %s (%.0f s)", final, seconds)
    return final


def _save_model(model: Any, tokenizer: Any, folder: Path) -> None:
    from drirl.io import atomic_directory

    with atomic_directory(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def _mean_logged(history: list[dict[str, Any]], key: str) -> float | None:
    values = [float(h[key]) for h in history if key in h]
    return round(sum(values) / len(values), 4) if values else None


def align_model_card(config: AlignConfig, record: dict[str, Any]) -> str:
    """README.md of a `drirl align` model: what it started from, what rewarded it, and the settings that ran."""
    reward = config.reward_models or config.external_reward_model or "reward functions given in Python"
    first, last = record.get("reward_first"), record.get("reward_last")
    lines = ["---", "library_name: transformers", "tags: [drirl, safety, grpo]", "---", "",
             f"# {record['method']} policy trained with `drirl align`", "",
             f"- **Started from:** `{config.policy}`",
             f"- **Rewards:** `{reward}`",
             f"- **Prompts:** {config.data or 'the bundled drirl set'} (train split), "
             f"{record['train_prompts']} prompts",
             f"- **Steps:** {record['steps']} in {record['train_seconds']} s; training reward "
             f"{'–' if first is None else f'{first:.3f}'} → {'–' if last is None else f'{last:.3f}'}", "",
             "## Settings it was trained with", "", "```json", json.dumps(record["config"], indent=2, default=str),
             "```", ""]
    return "\n".join(lines)


def read_history(output: str | Path) -> list[dict[str, Any]]:
    return json.loads((Path(output) / "log_history.json").read_text())


def align_policy_improver(config: Any, align_settings: Any = None) -> Callable[[str, Path, Path, list[Any]], str]:
    """The IRL policy step between reward rounds (METHOD.md §2.3), handed to
    :func:`drirl.reward.irl.train_reward_models` as ``improve_policy``: a GRPO run of
    ``config.policy_steps_per_round`` steps (``config``: the :class:`~drirl.reward.irl.RewardTrainConfig`).

    ``align_settings`` (an :class:`AlignConfig` or a dict of its fields, e.g. a pipeline's ``align:`` section) gives
    every other setting, so the step trains like the alignment stage does; without it the step uses AlignConfig's
    defaults with scaling off. The policy, bundle, output, data, step count and a merged LoRA are always set here.
    """
    if align_settings is None:
        base: dict[str, Any] = {"scaling_mode": "none", "seed": config.seed, "bf16": config.bf16}
    elif isinstance(align_settings, dict):
        base = dict(align_settings)
    else:
        base = config_to_dict(align_settings)

    def improve(policy: str, reward_models: Path, output: Path, examples: list[Any]) -> str:
        values = {**base, "policy": policy, "reward_models": str(reward_models), "output": str(output),
                  "max_steps": config.policy_steps_per_round, "data": config.data, "merge_lora": True}
        try:
            align = AlignConfig(**values)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"align settings of the IRL policy step: {err}", key="align") from None
        return str(run_align(align, examples=examples))

    return improve
