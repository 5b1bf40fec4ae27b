"""The baselines of METHOD.md §2.5 that are not GRPO: SFT on the demonstrations, DPO (demonstration chosen, policy
sample rejected) and AfD's Best-of-N selection (§2.3).

SFT and DPO train LoRA adapters through TRL (``SFTTrainer`` / ``DPOTrainer`` with ``peft_config``), then merge them
into the base weights and save a plain transformers folder (safetensors + tokenizer): every later stage (reward
negatives, GRPO, evaluation) loads it like any other model, with no PEFT dependency. Best-of-N needs no training:
it samples ``n`` responses per prompt from a (usually SFT) policy and keeps the one a reward model scores highest.

No training entry point accepts test-split examples: the test split is never trained on.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from drirl.align.settings import ScalingConfig
from drirl.config import help_field
from drirl.data.schema import BENIGN
from drirl.errors import ConfigError, DataError
from drirl.generation import GenerationSettings, as_messages, generate
from drirl.io import atomic_directory, atomic_write_json
from drirl.trainer_setup import PolicyLoraSettings, check_report_to, report_to_field, use_concise_logging

logger = logging.getLogger(__name__)

TRAIN_MANIFEST = "drirl-baseline.json"
SAVE_DTYPES = ("auto", "float32", "bfloat16", "float16")

Scorer = Callable[[list[Any], list[str], list[str]], Sequence[float]]


# --------------------------------------------------------------------------------------------------- configs
@dataclass
class _PolicyTrainingConfig(PolicyLoraSettings):
    """Fields shared by the SFT and DPO baselines (both fine-tune the policy with LoRA and save merged weights); the
    LoRA fields come from :class:`drirl.trainer_setup.PolicyLoraSettings`."""

    # Fields that do not change the trained model (drirl.stages).
    RUN_ONLY_FIELDS: ClassVar[tuple[str, ...]] = ("logging_steps", "report_to")

    learning_rate: float = field(default=2e-4, metadata=help_field(
        "Peak learning rate (LoRA; use ~1e-5 for full fine-tuning)."))
    num_train_epochs: float = field(default=1.0, metadata=help_field("Epochs over the training rows."))
    per_device_train_batch_size: int = field(default=8, metadata=help_field("Rows per device per optimizer step."))
    gradient_accumulation_steps: int = field(default=1, metadata=help_field("Gradient accumulation steps."))
    max_length: int = field(default=256, metadata=help_field(
        "Max tokens of prompt + response; longer rows are cut at the end (TRL's keep_start)."))
    lr_scheduler_type: str = field(default="cosine", metadata=help_field(
        "transformers scheduler name: linear, cosine, constant, constant_with_warmup, ..."))
    warmup_ratio: float = field(default=0.05, metadata=help_field(
        "Fraction of the optimizer steps spent warming the learning rate up from 0."))
    system_prompt: str | None = field(default=None, metadata=help_field(
        "System prompt put before every training prompt; use the same one at evaluation. Default: none."))
    save_dtype: str = field(default="auto", metadata=help_field(
        "dtype of the saved merged weights: auto (the base checkpoint's), float32, bfloat16 or float16."))
    bf16: str = field(default="auto", metadata=help_field(
        "bf16 mixed precision: true, false or auto (where the GPU or CPU supports it natively)."))
    seed: int = field(default=0, metadata=help_field("Seed for initialisation, data order and sampling."))
    logging_steps: int = field(default=5, metadata=help_field("Log every N optimizer steps."))
    max_steps: int = field(default=-1, metadata=help_field(
        "Stop after this many optimizer steps (overrides num_train_epochs); -1: run the epochs."))
    report_to: str = report_to_field()
    trust_remote_code: bool = field(default=False, metadata=help_field("Allow model code from the model folder."))
    allow_pickle: bool = field(default=False, metadata=help_field("Allow pickle-based (.bin) weights."))

    def __post_init__(self) -> None:
        self.check_lora()
        check_report_to(self.report_to)
        if self.save_dtype not in SAVE_DTYPES:
            raise ValueError(f"save_dtype must be one of {', '.join(SAVE_DTYPES)}, got {self.save_dtype!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


@dataclass
class SFTBaselineConfig(_PolicyTrainingConfig):
    """Supervised fine-tuning on the demonstrations (loss on the response tokens only)."""

    benign_repeats: int = field(default=1, metadata=help_field(
        "Times each benign demonstration appears in the SFT rows. The bundled set has more refusals than answers "
        "(252 to 150 in its train split), and a small model fine-tuned on it learns to refuse benign prompts that "
        "merely sound dangerous ('kill a process'); repeating the answers counters that."))

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.benign_repeats < 1:
            raise ValueError(f"benign_repeats must be >= 1, got {self.benign_repeats}")


@dataclass
class DPOBaselineConfig(_PolicyTrainingConfig, ScalingConfig):
    """DPO with the demonstration as the chosen response and a sample of the policy as the rejected one; with
    ``scaling_mode`` other than none, DPO-S: each pair's loss weighted by the GRPO-S factor α (the scaling fields are
    :class:`drirl.align.settings.ScalingConfig`'s)."""

    scaling_mode: str = field(default="none", metadata=help_field(
        "none: plain DPO (the default). data, model or both: DPO-S, each pair's loss multiplied by α computed as in "
        "GRPO-S: α^D from the rejected response's hardness δ against the demonstration, α^M from its reward gap "
        "R_j(q, rejected) − R_j(q, õ) under reward_models (needed for model and both). The references δ̄ and ḡ_ref "
        "are the category means over the training pairs (scaling_data_reference, scaling_model_reference and "
        "scaling_running_mean_momentum do not apply: the pairs are fixed before training)."))
    reward_models: str | None = field(default=None, metadata=help_field(
        "Reward-model bundle (`drirl reward train`) that scores the gaps of α^M in DPO-S; required by scaling_mode "
        "model and both (checked when training starts, since a pipeline fills it in with the bundle it trains)."))
    reward_fallback: str = field(default="error", metadata=help_field(
        "What a prompt whose category has no model in reward_models gets: error, single or mean."))

    # DPO moves the policy by log-ratio differences, which need a smaller step than SFT's likelihood.
    learning_rate: float = field(default=5e-5, metadata=help_field("Peak learning rate (LoRA)."))
    beta: float = field(default=0.1, metadata=help_field(
        "KL strength β of DPO: higher keeps the policy closer to the reference (the base model)."))
    loss_type: str = field(default="sigmoid", metadata=help_field(
        "TRL DPO loss: sigmoid (the DPO paper), ipo, hinge, robust, ..."))
    rejected_max_new_tokens: int = field(default=96, metadata=help_field(
        "New tokens per sampled rejected response (when no samples are given)."))
    rejected_temperature: float = field(default=1.0, metadata=help_field("Sampling temperature of rejected responses."))
    rejected_top_p: float = field(default=1.0, metadata=help_field("Nucleus mass of rejected responses."))
    generation_batch_size: int = field(default=16, metadata=help_field("Prompts per generate() call."))

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_scaling()
        if self.reward_fallback not in ("error", "single", "mean"):
            raise ConfigError(f"must be error, single or mean, got {self.reward_fallback!r}", key="reward_fallback")


@dataclass
class BestOfNConfig:
    """AfD's Best-of-N: sample n responses per prompt, keep the one the reward model scores highest."""

    n: int = field(default=4, metadata=help_field("Responses sampled per prompt."))
    max_new_tokens: int = field(default=96, metadata=help_field("New tokens per response."))
    temperature: float = field(default=1.0, metadata=help_field("Sampling temperature."))
    top_p: float = field(default=1.0, metadata=help_field("Nucleus sampling mass."))
    batch_size: int = field(default=16, metadata=help_field("Prompts per generate() call."))
    seed: int = field(default=0, metadata=help_field("Seed for sampling."))
    system_prompt: str | None = field(default=None, metadata=help_field(
        "System prompt for sampling (the scorer sees the prompt as given). Default: none."))

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")

    def generation_settings(self) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=self.max_new_tokens, do_sample=True, temperature=self.temperature,
                                  top_p=self.top_p, num_return_sequences=self.n, batch_size=self.batch_size,
                                  seed=self.seed)


# --------------------------------------------------------------------------------------------------- data
def refuse_test_split(examples: Iterable[Any], where: str) -> list[Any]:
    """The examples as a list; DataError when any belongs to the test split (it is never trained on)."""
    from drirl.data.schema import assert_not_test

    examples = list(examples)
    assert_not_test(examples, where=where)
    return examples


def _with_demonstrations(examples: list[Any], where: str) -> list[Any]:
    kept = [e for e in examples if isinstance(e.demonstration, str) and e.demonstration.strip()]
    if len(kept) < len(examples):
        logger.info("%s: skipped %d of %d examples without a demonstration", where, len(examples) - len(kept),
                    len(examples))
    if not kept:
        raise DataError(f"{where}: none of the {len(examples)} examples has a demonstration", field="demonstration")
    return kept


def _messages(prompt: str | list[dict], system_prompt: str | None) -> list[dict[str, str]]:
    # Arrow needs one schema per column: keep only role and content of each message.
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in as_messages(prompt, system_prompt)]


def sft_rows(examples: Sequence[Any], system_prompt: str | None = None, benign_repeats: int = 1
             ) -> list[dict[str, Any]]:
    """Conversational prompt-completion rows: TRL then computes the loss on the completion tokens only. Benign
    examples appear ``benign_repeats`` times (next to each other; the trainer shuffles)."""
    return [{"prompt": _messages(e.prompt, system_prompt),
             "completion": [{"role": "assistant", "content": e.demonstration}]}
            for e in examples for _ in range(benign_repeats if e.category == BENIGN else 1)]


def dpo_rows(examples: Sequence[Any], rejected: dict[str, list[str]],
             system_prompt: str | None = None, *, with_category: bool = False) -> list[dict[str, Any]]:
    """One preference row per (example, rejected sample): the demonstration is chosen, the sample rejected.
    ``with_category`` adds the example's ``category`` to each row (DPO-S needs it for α's references).

    A sample identical to the demonstration carries no preference (its DPO gradient is zero) and is dropped.
    """
    rows: list[dict[str, Any]] = []
    missing = identical = 0
    for example in examples:
        samples = rejected.get(example.id)
        if not samples:
            missing += 1
            continue
        for sample in samples:
            if sample.strip() == example.demonstration.strip():
                identical += 1
                continue
            rows.append({"prompt": _messages(example.prompt, system_prompt),
                         "chosen": [{"role": "assistant", "content": example.demonstration}],
                         "rejected": [{"role": "assistant", "content": sample}],
                         **({"category": example.category} if with_category else {})})
    if missing:
        logger.info("DPO: %d examples have no rejected sample and are skipped", missing)
    if identical:
        logger.info("DPO: dropped %d rejected samples identical to their demonstration", identical)
    return rows


# --------------------------------------------------------------------------------------------------- saving
def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def _checkpoint_dtype(reference: str, trust_remote_code: bool = False):
    """The dtype the base checkpoint is stored in, so a merged copy takes the same disk space."""
    import torch
    from transformers import AutoConfig

    from drirl.models import resolve_model

    config = AutoConfig.from_pretrained(resolve_model(reference), trust_remote_code=trust_remote_code)
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else torch.float32


def merge_and_save(model: Any, tokenizer: Any, output_dir: str | Path, *, dtype: Any = None,
                   manifest: dict[str, Any] | None = None) -> Path:
    """Merge LoRA adapters (if any) into the weights and save a plain transformers folder atomically.

    The folder holds safetensors weights, the config, the generation config and the tokenizer with pad/eos made
    consistent, so it loads through :func:`drirl.models.load_policy` without PEFT. ``manifest`` (if given) is
    written beside them as ``drirl-baseline.json`` for provenance.
    """
    from drirl.models import fix_special_tokens

    if hasattr(model, "merge_and_unload"):  # a peft.PeftModel
        model = model.merge_and_unload()
    if dtype is not None:
        model = model.to(dtype)
    # Training turns the KV cache off; a saved policy is used for generation, where the cache is wanted.
    if getattr(model.config, "use_cache", None) is False:
        model.config.use_cache = True
    fix_special_tokens(tokenizer, model)
    output_dir = Path(output_dir)
    with atomic_directory(output_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if manifest is not None:
            atomic_write_json(tmp / TRAIN_MANIFEST, manifest)
    logger.info("merged model saved to %s", output_dir)
    return output_dir


def _lora_config(config: _PolicyTrainingConfig, model_ref: str):
    return config.peft_lora_config("CAUSAL_LM", model_ref)


def _load_for_training(model_ref: str, config: _PolicyTrainingConfig):
    """(model, tokenizer) in fp32 (bf16 runs as autocast over fp32 master weights), right padding for training."""
    import torch

    from drirl.models import load_causal_lm, load_tokenizer

    tokenizer = load_tokenizer(model_ref, trust_remote_code=config.trust_remote_code, padding_side="right")
    model = load_causal_lm(model_ref, dtype=torch.float32, trust_remote_code=config.trust_remote_code,
                           allow_pickle=config.allow_pickle, tokenizer=tokenizer)
    return model, tokenizer


def _bf16_setting(value: bool | str) -> bool | str:
    # The YAML/CLI field is a string ("true", "false", "auto"); resolve_bf16 wants a bool or "auto".
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.lower() in ("true", "yes", "1")
    return value


def _training_arguments(config: _PolicyTrainingConfig, work_dir: Path) -> dict[str, Any]:
    from drirl.trainer_setup import trainer_arguments

    return trainer_arguments(
        str(work_dir), seed=config.seed, learning_rate=config.learning_rate, bf16=_bf16_setting(config.bf16),
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps, logging_steps=config.logging_steps, report_to=config.report_to,
        lr_scheduler_type=config.lr_scheduler_type,
        # transformers 5 dropped warmup_ratio: a float below 1 in warmup_steps is read as the ratio.
        warmup_steps=float(config.warmup_ratio),
        max_length=config.max_length)


def _shards_parameters(trainer: Any) -> bool:
    """True under FSDP or DeepSpeed ZeRO-3, where no single process holds the full weights."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return True
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None)
    return bool(getattr(trainer, "is_deepspeed_enabled", False) and plugin is not None and plugin.zero_stage == 3)


def _finish(trainer: Any, tokenizer: Any, model_ref: str, output_dir: Path, work_dir: Path,
            config: _PolicyTrainingConfig, manifest: dict[str, Any]) -> Path:
    """Merge and save on the main process; under sharded training, gather the weights through save_model first."""
    accelerator = trainer.accelerator
    dtype = _torch_dtype(config.save_dtype) if config.save_dtype != "auto" else _checkpoint_dtype(
        model_ref, config.trust_remote_code)
    if _shards_parameters(trainer):
        # save_model is collective: it gathers the sharded adapter (or full) weights into one folder on rank 0.
        gathered = work_dir / "gathered"
        trainer.save_model(str(gathered))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            model = _reload_gathered(model_ref, gathered, config)
            merge_and_save(model, tokenizer, output_dir, dtype=dtype, manifest=manifest)
    elif accelerator.is_main_process:
        merge_and_save(accelerator.unwrap_model(trainer.model), tokenizer, output_dir, dtype=dtype,
                       manifest=manifest)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(work_dir, ignore_errors=True)
    return output_dir


def _reload_gathered(model_ref: str, folder: Path, config: _PolicyTrainingConfig):
    import torch

    from drirl.models import load_causal_lm

    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        base = load_causal_lm(model_ref, dtype=torch.float32, trust_remote_code=config.trust_remote_code,
                              allow_pickle=config.allow_pickle)
        return PeftModel.from_pretrained(base, str(folder))
    return load_causal_lm(str(folder), dtype=torch.float32, trust_remote_code=config.trust_remote_code)


def _work_dir(output_dir: Path) -> Path:
    # Beside the output (same file system) and with a fixed name, so every process of a distributed run agrees.
    return output_dir.with_name(f".{output_dir.name}.trainer")


def _manifest(method: str, model_ref: str, config: Any, trainer: Any, started: float,
              **counts: Any) -> dict[str, Any]:
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"method": method, "base_model": model_ref, "config": dataclasses.asdict(config), **counts,
            "optimizer_steps": trainer.state.global_step,
            "first_logged_loss": round(float(losses[0]), 4) if losses else None,
            "last_logged_loss": round(float(losses[-1]), 4) if losses else None,
            "train_seconds": round(time.time() - started, 1)}


# --------------------------------------------------------------------------------------------------- SFT
def train_sft(examples: Iterable[Any], model: str, output_dir: str | Path,
              config: SFTBaselineConfig | None = None) -> Path:
    """Fine-tune ``model`` on the demonstrations of ``examples``; returns ``output_dir`` (a merged model folder).

    Examples without a demonstration are skipped (counted in the log); test-split examples raise DataError.
    """
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from drirl.trainer_setup import seed_everything

    config = config or SFTBaselineConfig()
    examples = _with_demonstrations(refuse_test_split(examples, "SFT training"), "SFT")
    output_dir, started = Path(output_dir), time.time()
    work_dir = _work_dir(output_dir)
    seed_everything(config.seed)
    policy, tokenizer = _load_for_training(model, config)
    args = SFTConfig(**_training_arguments(config, work_dir),
                     completion_only_loss=True,  # the prompt is context, not a target
                     packing=False)
    rows = sft_rows(examples, config.system_prompt, config.benign_repeats)
    trainer = SFTTrainer(model=policy, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=_lora_config(config, model) if config.use_lora else None)
    logger.info("SFT: %d demonstrations, base %s", len(examples), model)
    use_concise_logging(trainer)
    trainer.train()
    manifest = _manifest("sft", model, config, trainer, started, train_examples=len(examples), train_rows=len(rows))
    return _finish(trainer, tokenizer, model, output_dir, work_dir, config, manifest)


def afd_sft_trainer(config: Any) -> Callable[[list[Any], Path], str]:
    """The SFT policy of AfD's reward variants (sft-demo, init-sft), handed to
    :func:`drirl.reward.irl.train_reward_models` as ``train_sft_policy``: :func:`train_sft` from ``config.policy``
    with the reward config's SFT settings (``sft_learning_rate``, ``sft_epochs``, seed, precision, prompt format)."""

    def train(examples: list[Any], output: Path) -> str:
        sft = SFTBaselineConfig(learning_rate=config.sft_learning_rate, num_train_epochs=config.sft_epochs,
                                seed=config.seed, bf16=config.bf16, system_prompt=config.system_prompt,
                                max_length=max(config.max_length, config.negative_max_new_tokens + 64),
                                per_device_train_batch_size=config.per_device_train_batch_size,
                                report_to=config.report_to, logging_steps=config.logging_steps,
                                trust_remote_code=config.trust_remote_code, allow_pickle=config.allow_pickle)
        return str(train_sft(examples, config.policy, output, sft))

    return train


# --------------------------------------------------------------------------------------------------- DPO
def sample_rejected(model: str, examples: Sequence[Any], config: DPOBaselineConfig) -> dict[str, list[str]]:
    """One sample of ``model`` per example (the rejected response of DPO), sampled on the main process only and
    shared with the others, so every process trains on the same pairs."""
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    state = PartialState()
    payload: list[Any] = [None]
    if state.is_main_process:
        payload[0] = _sample_on_this_process(model, examples, config)
    if state.num_processes > 1:
        broadcast_object_list(payload, from_process=0)
    return payload[0]


def _sample_on_this_process(model_ref: str, examples: Sequence[Any], config: DPOBaselineConfig) -> dict[str, list[str]]:
    import torch

    from drirl.models import load_policy
    from drirl.trainer_setup import has_cuda

    model, tokenizer = load_policy(model_ref, trust_remote_code=config.trust_remote_code,
                                   allow_pickle=config.allow_pickle)
    if has_cuda():
        model.to("cuda")
    settings = GenerationSettings(max_new_tokens=config.rejected_max_new_tokens, do_sample=True,
                                  temperature=config.rejected_temperature, top_p=config.rejected_top_p,
                                  num_return_sequences=1, batch_size=config.generation_batch_size, seed=config.seed)
    samples = generate(model, tokenizer, [e.prompt for e in examples], settings, system_prompt=config.system_prompt,
                       description="sampling rejected responses")
    del model
    if has_cuda():
        torch.cuda.empty_cache()
    return {e.id: s for e, s in zip(examples, samples, strict=True)}


PAIR_WEIGHT = "pair_weight"
# TRL loss types that mix the pairs of a batch (sorting, a batch-wide token mean): a per-pair weight is undefined.
_BATCH_COUPLED_LOSSES = ("aot", "aot_unpaired", "sft")


def dpo_scaling(rows: Sequence[dict[str, Any]], categories: Sequence[str], config: DPOBaselineConfig, *,
                text_encoder: Any = None, reward_model: Any = None):
    """α of every DPO row (DPO-S): α^D of the rejected response against the chosen demonstration, α^M from the
    reward gap R_j(q, rejected) − R_j(q, õ); a :class:`drirl.align.scaling_batch.PairScaling`.

    ``text_encoder`` (Φ) and ``reward_model`` (a :class:`drirl.reward.bundle.CategoryRewardModels` or any object
    with ``score(prompts, completions, categories)``) default to ``config.text_encoder`` and
    ``config.reward_models``; each is loaded only when its factor is used.
    """
    import json

    import torch

    from drirl.align.grpo_s import HardnessEncoder
    from drirl.align.scaling_batch import dpo_pair_weights

    count = len(rows)
    prompts = [row["prompt"] for row in rows]
    demos = [row["chosen"][0]["content"] for row in rows]
    samples = [row["rejected"][0]["content"] for row in rows]
    delta = torch.zeros(count)
    if config.scaling_mode in ("data", "both"):
        if text_encoder is None:
            from drirl.models import load_text_encoder

            text_encoder = load_text_encoder(config.text_encoder)
        delta = HardnessEncoder(text_encoder, config.encoder_batch_size, config.scaling_delta_on,
                               config.scaling_sentence_splitter).deltas(samples, demos)
    gaps = torch.zeros(count)
    if config.scaling_mode in ("model", "both"):
        if reward_model is None and not config.reward_models:
            raise ConfigError(f"scaling_mode {config.scaling_mode!r} (α^M) needs the reward-model bundle that scores "
                              "the gaps", key="reward_models")
        if reward_model is None:
            from drirl.reward.bundle import CategoryRewardModels

            reward_model = CategoryRewardModels(config.reward_models, fallback=config.reward_fallback,
                                                bf16=_bf16_setting(config.bf16), allow_pickle=config.allow_pickle)
        # R_j(q, õ) is the same for every sample of a prompt: score each (prompt, demonstration) once.
        demo_keys = [json.dumps([p, d, c], sort_keys=True) for p, d, c in zip(prompts, demos, categories, strict=True)]
        unique = dict(zip(demo_keys, range(count), strict=True))
        order = list(unique.values())
        demo_scores = reward_model.score([prompts[i] for i in order], [demos[i] for i in order],
                                         [categories[i] for i in order])
        demo_reward = dict(zip(unique, demo_scores, strict=True))
        rewards = reward_model.score(prompts, samples, list(categories))
        gaps = torch.tensor([float(r) - float(demo_reward[k]) for r, k in zip(rewards, demo_keys, strict=True)])
    prompt_keys = [json.dumps(p, sort_keys=True) for p in prompts]
    return dpo_pair_weights(delta, gaps, prompt_keys, list(categories), config)


def _pair_slice(inputs: dict[str, Any], index: int, pairs: int) -> dict[str, Any]:
    """The collated inputs of pair ``index`` of a batch laid out TRL's way: rows [chosen_0..n−1, rejected_0..n−1]."""
    import torch

    rows = torch.tensor([index, pairs + index])
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        if not torch.is_tensor(value):
            out[key] = value
        elif value.dim() and value.shape[0] == 2 * pairs:
            out[key] = value[rows.to(value.device)]
        elif value.dim() and value.shape[0] == pairs:
            out[key] = value[index:index + 1]
        else:
            raise ValueError(f"DPO-S cannot split the batch input {key!r} of shape {tuple(value.shape)} by pair")
    # Drop the padding columns neither row uses (right padding): the pair's loss is unchanged, the forward cheaper.
    if "attention_mask" in out and out["attention_mask"].dim() == 2:
        width = int(out["attention_mask"].sum(dim=1).max().item())
        full = inputs["attention_mask"].shape[1]
        out = {k: (v[:, :width] if torch.is_tensor(v) and v.dim() == 2 and v.shape[1] == full else v)
               for k, v in out.items()}
    return out


class _PairWeightCollator:
    """Wraps TRL's preference collator and carries each row's α (``pair_weight``) into the batch."""

    def __init__(self, inner: Callable[[list[dict[str, Any]]], dict[str, Any]]):
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        weights = [example.get(PAIR_WEIGHT) for example in examples]
        batch = self.inner([{k: v for k, v in example.items() if k != PAIR_WEIGHT} for example in examples])
        if all(w is not None for w in weights):
            batch[PAIR_WEIGHT] = torch.tensor(weights, dtype=torch.float32)
        return batch


def _dpo_s_trainer_class():
    from trl import DPOTrainer

    class DPOSTrainer(DPOTrainer):
        """TRL's DPOTrainer with each pair's loss multiplied by its weight α (column ``pair_weight``): DPO-S.

        The loss of a batch of n pairs is (1/n) Σ_i α_i ℓ_i, ℓ_i TRL's per-pair loss. TRL averages the per-pair losses
        inside ``_compute_loss`` with no hook in between, so ``compute_loss`` is overridden: a batch whose weights
        are all equal is TRL's loss times that weight; otherwise TRL's loss is computed pair by pair (the same
        forward passes, in slices) and weighted. Rows without ``pair_weight`` train as plain DPO, and evaluation
        (``return_outputs=True``) reports TRL's unweighted loss.
        """

        def __init__(self, *args: Any, **kwargs: Any):
            super().__init__(*args, **kwargs)
            losses = self.loss_types if isinstance(self.loss_types, (list, tuple)) else [self.loss_types]
            coupled = [t for t in losses if t in _BATCH_COUPLED_LOSSES]
            if coupled:
                raise ConfigError(f"DPO-S weights each pair's loss; loss_type {coupled[0]!r} couples the pairs of a "
                                  "batch", key="loss_type")
            if getattr(self.args, "padding_free", False):
                raise ConfigError("DPO-S splits batches by pair and needs padding_free: false", key="padding_free")
            self.data_collator = _PairWeightCollator(self.data_collator)

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if PAIR_WEIGHT not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, PAIR_WEIGHT]

        def compute_ref_log_probs(self, model, inputs):
            return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != PAIR_WEIGHT})

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weights = inputs.pop(PAIR_WEIGHT, None)
            if weights is None or return_outputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return weighted_pair_loss(lambda batch: super(DPOSTrainer, self).compute_loss(model, batch), inputs,
                                      weights)

    return DPOSTrainer


def weighted_pair_loss(pair_loss: Callable[[dict[str, Any]], Any], inputs: dict[str, Any], weights: Any) -> Any:
    """(1/n) Σ_i α_i ℓ_i for a collated batch of n pairs, where ``pair_loss(batch)`` is the mean per-pair loss of a
    batch (TRL's). Equal weights need one call on the whole batch; otherwise one call per pair."""
    import torch

    weights = weights.float().flatten()
    pairs = weights.numel()
    if pairs == 0:
        raise ValueError("DPO-S got an empty batch")
    if torch.allclose(weights, weights[0].expand_as(weights)):
        return pair_loss(inputs) * weights[0].item()
    total = None
    for i in range(pairs):
        term = pair_loss(_pair_slice(inputs, i, pairs)) * weights[i].item()
        total = term if total is None else total + term
    return total / pairs


def train_dpo(examples: Iterable[Any], rejected: dict[str, list[str]] | None, model: str,
              output_dir: str | Path, config: DPOBaselineConfig | None = None, *, text_encoder: Any = None,
              reward_model: Any = None) -> Path:
    """DPO (or DPO-S) of ``model`` with each demonstration chosen over each of its rejected samples; returns
    ``output_dir``.

    ``model`` is where training starts (the base model, or the SFT warm start as for the GRPO methods) and is also
    DPO's reference policy (LoRA adapters disabled). ``rejected`` maps example id to sampled responses (one pair per
    sample); None samples one response per prompt from ``model`` itself. With ``config.scaling_mode`` other than
    none, each pair's loss is weighted by α (:func:`dpo_scaling`; ``text_encoder`` and ``reward_model`` replace the
    ones the config names, e.g. in tests).
    """
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from drirl.trainer_setup import seed_everything

    config = config or DPOBaselineConfig()
    examples = _with_demonstrations(refuse_test_split(examples, "DPO training"), "DPO")
    output_dir, started = Path(output_dir), time.time()
    work_dir = _work_dir(output_dir)
    if rejected is None:
        rejected = sample_rejected(model, examples, config)
    rows = dpo_rows(examples, rejected, config.system_prompt, with_category=True)
    if not rows:
        raise DataError("DPO: no (chosen, rejected) pair could be built; check that the rejected samples are keyed "
                        "by example id", field="id")
    scaling_summary: dict[str, Any] = {}
    trainer_class = DPOTrainer
    if config.scaling_mode != "none":
        categories = [row.pop("category") for row in rows]
        scaling = dpo_scaling(rows, categories, config, text_encoder=text_encoder, reward_model=reward_model)
        for row, weight in zip(rows, scaling.alpha.tolist(), strict=True):
            row[PAIR_WEIGHT] = float(weight)
        alpha = scaling.alpha.float()
        scaling_summary = {"scaling": {
            "mode": config.scaling_mode, "alpha_mean": round(alpha.mean().item(), 4),
            "alpha_std": round(alpha.std().item(), 4) if alpha.numel() > 1 else 0.0,
            "alpha_min": round(alpha.min().item(), 4), "alpha_max": round(alpha.max().item(), 4),
            "fraction_clipped": round(scaling.fraction_clipped, 4),
            "fraction_masked": round(scaling.fraction_masked, 4)}}
        logger.info("DPO-S: α over %d pairs: mean %.3f, range [%.3f, %.3f], clipped %.1f%%, masked %.1f%%", len(rows),
                    alpha.mean().item(), alpha.min().item(), alpha.max().item(), 100 * scaling.fraction_clipped,
                    100 * scaling.fraction_masked)
        trainer_class = _dpo_s_trainer_class()
    else:
        for row in rows:
            row.pop("category")
    seed_everything(config.seed)
    policy, tokenizer = _load_for_training(model, config)
    args = DPOConfig(**_training_arguments(config, work_dir), beta=config.beta, loss_type=config.loss_type)
    trainer = trainer_class(model=policy, args=args, train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer,
                            peft_config=_lora_config(config, model) if config.use_lora else None)
    logger.info("DPO: %d pairs from %d examples, base %s", len(rows), len(examples), model)
    use_concise_logging(trainer)
    trainer.train()
    method = "dpo" if config.scaling_mode == "none" else "dpo-s"
    manifest = _manifest(method, model, config, trainer, started, train_examples=len(examples), train_pairs=len(rows),
                         **scaling_summary)
    return _finish(trainer, tokenizer, model, output_dir, work_dir, config, manifest)


# --------------------------------------------------------------------------------------------------- Best-of-N
def select_best(candidates: Sequence[Sequence[str]], scores: Sequence[float]) -> list[str]:
    """Per prompt, the candidate with the highest score (``scores`` flat, in candidate order; ties: the first;
    NaN never wins unless every score of the prompt is NaN)."""
    chosen: list[str] = []
    offset = 0
    for options in candidates:
        values = [float(s) for s in scores[offset:offset + len(options)]]
        offset += len(options)
        best = 0
        for i, value in enumerate(values):
            if value > values[best] or (values[best] != values[best] and value == value):  # x != x: NaN
                best = i
        chosen.append(options[best] if options else "")
    return chosen


def best_of_n(model: Any, tokenizer: Any, prompts: Sequence[str | list[dict]], categories: Sequence[str],
              scorer: Scorer, config: BestOfNConfig | None = None) -> list[str]:
    """AfD's Best-of-N: ``config.n`` samples per prompt from ``model``, scored by
    ``scorer(prompts, completions, categories)``; returns the highest-scoring response per prompt."""
    config = config or BestOfNConfig()
    prompts, categories = list(prompts), list(categories)
    if len(prompts) != len(categories):
        raise ValueError(f"prompts and categories differ in length: {len(prompts)} vs {len(categories)}")
    if not prompts:
        return []
    from drirl.distributed import generate_sharded

    # Under several processes each samples its share of the batches (one-process seeds); all get every candidate.
    candidates = generate_sharded(model, tokenizer, prompts, config.generation_settings(),
                          system_prompt=config.system_prompt, description="best-of-n sampling")
    flat_prompts = [p for p, options in zip(prompts, candidates, strict=True) for _ in options]
    flat_categories = [c for c, options in zip(categories, candidates, strict=True) for _ in options]
    flat = [o for options in candidates for o in options]
    scores = list(scorer(flat_prompts, flat, flat_categories))
    if len(scores) != len(flat):
        raise ValueError(f"the scorer returned {len(scores)} scores for {len(flat)} responses")
    return select_best(candidates, scores)


class BestOfNResponder:
    """A responder for the evaluation harness: ``responder(prompts, categories) -> responses`` by Best-of-N."""

    def __init__(self, model: Any, tokenizer: Any, scorer: Scorer, config: BestOfNConfig | None = None):
        self.model, self.tokenizer, self.scorer = model, tokenizer, scorer
        self.config = config or BestOfNConfig()

    @classmethod
    def from_paths(cls, policy: str, reward_models: str | Path, config: BestOfNConfig | None = None,
                   **bundle_kwargs: Any) -> BestOfNResponder:
        """Load the policy (a model reference) and a reward-model bundle folder, scoring with the bundle."""
        from drirl.models import load_policy
        from drirl.reward.bundle import CategoryRewardModels
        from drirl.trainer_setup import has_cuda

        model, tokenizer = load_policy(policy)
        if has_cuda():
            model.to("cuda")
        bundle = CategoryRewardModels(reward_models, **bundle_kwargs)
        return cls(model, tokenizer, bundle.score, config)

    def __call__(self, prompts: Sequence[str | list[dict]], categories: Sequence[str]) -> list[str]:
        return best_of_n(self.model, self.tokenizer, prompts, categories, self.scorer, self.config)
