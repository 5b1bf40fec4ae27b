"""Category reward models learned by maximum-likelihood inverse RL (METHOD.md §2.3).

For each category j a reward model R_j (a causal-LM backbone with a scalar head) is fitted with the Bradley-Terry
loss  −log σ(r(x, y⁺) − r(x, y⁻))  where, by variant:

* ``demo-vs-policy`` (DR-IRL, default): y⁺ the demonstration, y⁻ a sample of the current policy;
* ``init-demo``: y⁺ the demonstration, y⁻ a sample of the initial model (never re-sampled);
* ``sft-demo``: y⁺ the demonstration, y⁻ a sample of an SFT policy trained on the demonstrations;
* ``init-sft`` (AfD): y⁺ a sample of the SFT policy, y⁻ a sample of the initial model, which keeps the
  demonstrator's *style* out of the reward (AfD's guard against reward hacking).

``extra_negative_policy`` adds a second policy's samples as negatives for the demonstration variants: with a warm
start, the policy GRPO starts from (the SFT model) is the "current policy" of ML-IRL, so its failures on the
training prompts are scored below the demonstrations too. (Measured on the demo: those failures are mostly answers
to harmful prompts; it fits the benign training prompts, so it adds no refused benign prompt.)

``negatives`` picks what the negatives are. ``policy`` (default): the samples above as they come, cut at
``negative_max_new_tokens``. ``controlled``: pairs controlled for content (:mod:`drirl.reward.decision`), where form
and length are the same on both sides and only the decision differs: a harmful prompt's compliant samples wrapped in
the demonstration's ``Draft: ... -> ...`` line, refusals in the demonstration's form for benign and borderline
prompts (written from the harmful categories' phrasing, plus a policy's own over-refusals), and another prompt's
demonstration as a relevance negative; both answers cut at sentence ends to a common length.

``on_policy_samples`` adds pairs of the starting policy's *own* samples that differ in the decision (its refusal over
its compliant answer on a harmful prompt, its answer over its refusal on a benign one): the controlled pairs teach the
decision on the demonstrations' text, and without these the reward barely ranks the policy's own candidates by it
(docs/results/reward-decision.md, the Best-of-8 gate).

``init_from_pooled`` first fits one pooled model on every category's pairs and starts each category's adapter and
head (or full model) from it, so a category with few pairs refines shared knowledge instead of starting cold; the
pooled model is kept in the bundle as ``all``.

The score head's logit is the reward; for a logistic discriminator that logit is AfD's log D − log(1 − D).
With ``rounds`` K > 1 the min-max of ML-IRL is approximated by alternation: fit R, improve the policy against it
with a short GRPO run, re-sample the negatives from the improved policy, fit again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from drirl.config import config_to_dict, help_field
from drirl.distributed import on_main
from drirl.errors import ConfigError, DataError
from drirl.generation import GenerationSettings, as_messages
from drirl.io import atomic_directory, atomic_write_json, is_temporary, remove_temporaries, sha256_json
from drirl.reward.bundle import BUNDLE_FORMAT, MANIFEST, SINGLE_MODEL
from drirl.reward.negatives import sample_negatives
from drirl.reward.scoring import encode_pair, fit_max_length
from drirl.stages import output_settings, prepare_work_dir
from drirl.trainer_setup import DEFAULT_LORA_TARGETS, check_report_to, report_to_field, top_layers, use_concise_logging

logger = logging.getLogger(__name__)

VARIANTS = ("demo-vs-policy", "init-demo", "sft-demo", "init-sft")
NEGATIVE_KINDS = ("policy", "controlled")


@dataclass
class RewardTrainConfig:
    # Fields that change how the bundle is trained or checked, not the models it holds (drirl.stages): a change
    # retrains nothing, under `drirl run` and `drirl reward train` alike.
    RUN_ONLY_FIELDS: ClassVar[tuple[str, ...]] = ("output", "negatives_cache", "generation_batch_size", "logging_steps",
                                                  "report_to", "eval_max_prompts_per_category")

    output: str | None = field(default=None, metadata=help_field("Folder of the reward-model bundle to write.",
                                                                  required=True))
    policy: str = field(default="smollm2-135m-instruct", metadata=help_field(
        "Reference policy whose samples are the negatives (model folder, hub id or bundled alias)."))
    backbone: str | None = field(default=None, metadata=help_field(
        "Backbone of the reward models; default: the policy."))
    data: str | None = field(default=None, metadata=help_field(
        "Demonstrations (JSONL or datasets folder); default: the bundled set. Only the train split is used."))
    taxonomy: str | None = field(default=None, metadata=help_field("Category taxonomy YAML; default: bundled."))
    categories: list[str] = field(default_factory=list, metadata=help_field(
        "Categories to train (comma-separated on the command line); default: every category in the data."))
    include_benign: bool = field(default=True, metadata=help_field(
        "Also train a model for benign prompts, so GRPO can score them."))
    per_category: bool = field(default=True, metadata=help_field(
        "One reward model per category (DR-IRL). False: one model for all categories (the ablation)."))
    mode: Literal["lora", "full"] = field(default="lora", metadata=help_field(
        "'lora': adapters (with their scalar heads) over one shared backbone; 'full': full fine-tuning."))
    variant: Literal["demo-vs-policy", "init-demo", "sft-demo", "init-sft"] = field(
        default="demo-vs-policy", metadata=help_field("Which samples are positives and negatives (see module doc)."))
    rounds: int = field(default=1, metadata=help_field(
        "K rounds of ML-IRL alternation (re-sample negatives from a policy improved between rounds)."))
    policy_steps_per_round: int = field(default=10, metadata=help_field(
        "GRPO steps that improve the policy between two IRL rounds (rounds > 1)."))
    negatives_per_prompt: int = field(default=2, metadata=help_field(
        "Policy samples (k) per prompt (every training prompt is used unless max_prompts_per_category caps it)."))
    negatives: Literal["policy", "controlled"] = field(default="policy", metadata=help_field(
        "'policy': the policy samples as they are (truncated at negative_max_new_tokens). 'controlled': pairs of "
        "one form and length that differ in the decision: compliant samples in the demonstration's Draft/Answer "
        "form on harmful prompts, refusals in the demonstration's form on benign ones, another prompt's "
        "demonstration as a relevance negative. For the demonstration variants: init-sft, whose positives are SFT "
        "samples, keeps its sample pairs (its manifest says 'policy'), so one reward section serves every method."))
    refusals_per_prompt: int = field(default=2, metadata=help_field(
        "negatives: controlled: written refusals per benign prompt, each from another harmful category's phrasing."))
    relevance_negatives: int = field(default=1, metadata=help_field(
        "negatives: controlled: other demonstrations of the same category per prompt, as negatives."))
    overrefusal_split: str | None = field(default=None, metadata=help_field(
        "negatives: controlled, with extra_negative_policy (the warm start): also sample it on the benign prompts "
        "of this split (e.g. 'validation': prompts it was not trained on, where it over-refuses more) and add each "
        "refusal, against that prompt's demonstration, to the benign model's pairs. Never 'test'."))
    on_policy_samples: int = field(default=0, metadata=help_field(
        "negatives: controlled: also draw this many samples per training prompt, at on_policy_temperature, of the "
        "policy GRPO starts from (extra_negative_policy, the warm start under `drirl run` with "
        "run.reward_negatives: policy+warm_start; without one, the policy that gives the negatives) and pair them by "
        "their decision, judged by the offline rules judge (clear verdicts only): a refusal over a compliant answer "
        "on harmful prompts, an answer over a refusal on benign ones (drirl.reward.decision.on_policy_pairs). It "
        "teaches the reward to rank the policy's own candidates by the decision; at the demo's size GRPO-S from such "
        "a reward did not improve on its warm start (docs/results/on-policy-cpu.md). An extra_negative_policy is "
        "then sampled once, at these settings: the first negatives_per_prompt of each prompt's samples are its "
        "negatives. init-sft ignores it, as it ignores `negatives`. 0: off."))
    on_policy_pairs_per_prompt: int = field(default=2, metadata=help_field(
        "on_policy_samples: at most this many on-policy pairs per prompt."))
    on_policy_temperature: float = field(default=1.0, metadata=help_field(
        "on_policy_samples: sampling temperature; the GRPO rollouts' (align.temperature) makes the pairs look like "
        "the candidates the reward will score."))
    init_from_pooled: bool = field(default=False, metadata=help_field(
        "Fit one pooled model on all categories' pairs first and start each category's model from it (kept in "
        "the bundle as 'all'). A single-model bundle (per_category: false) is the pooled model already: there it "
        "changes nothing, so one reward section serves the per-category methods and their single-model ablation."))
    pooled_epochs: float | None = field(default=None, metadata=help_field(
        "Epochs of the pooled model of init_from_pooled; default num_train_epochs."))
    sft_policy: str | None = field(default=None, metadata=help_field(
        "An SFT model to use instead of training one: sft-demo samples its negatives from it, init-sft its "
        "positives (give the model Best-of-N samples). `drirl run` passes its SFT warm start."))
    extra_negative_policy: str | None = field(default=None, metadata=help_field(
        "A second policy whose samples are negatives too (negatives_per_prompt from each), e.g. the SFT model GRPO "
        "starts from; not with init-sft, which pairs its samples one to one. `drirl run` sets it to the SFT warm "
        "start with run.reward_negatives: policy+warm_start."))
    max_prompts_per_category: int | None = field(default=None, metadata=help_field(
        "Cap on training prompts per category (deterministic by seed); default: all."))
    eval_max_prompts_per_category: int | None = field(default=None, metadata=help_field(
        "`drirl run` only: cap on test prompts per category in the held-out evaluation after training (its "
        "cross-category matrix scores every test pair with every model); default: all. Changing it does not "
        "retrain the bundle."))
    negative_max_new_tokens: int = field(default=64, metadata=help_field("New tokens per sampled negative."))
    negative_temperature: float = field(default=1.0, metadata=help_field("Sampling temperature of negatives."))
    negative_top_p: float = field(default=1.0, metadata=help_field("Nucleus mass of negatives."))
    generation_batch_size: int = field(default=32, metadata=help_field("Prompts per generate() call."))
    negatives_cache: str | None = field(default=None, metadata=help_field(
        "Folder caching sampled negatives; default: $DRIRL_CACHE/negatives."))
    max_length: int = field(default=192, metadata=help_field(
        "Max tokens of a (prompt, response) pair; longer pairs keep their last tokens."))
    learning_rate: float = field(default=2e-4, metadata=help_field("Learning rate (LoRA; use ~1e-5 for full)."))
    lr_scheduler_type: str = field(default="cosine", metadata=help_field(
        "transformers scheduler name: linear, cosine, constant, constant_with_warmup, ..."))
    warmup_ratio: float = field(default=0.05, metadata=help_field(
        "Fraction of each model's optimizer steps spent warming the learning rate up from 0."))
    num_train_epochs: float = field(default=2.0, metadata=help_field("Epochs over each category's pairs."))
    per_device_train_batch_size: int = field(default=8, metadata=help_field("Pairs per device per step."))
    gradient_accumulation_steps: int = field(default=1, metadata=help_field("Gradient accumulation steps."))
    center_rewards_coefficient: float | None = field(default=0.01, metadata=help_field(
        "Penalty on (r⁺ + r⁻)² that keeps rewards centred near 0 (TRL's center_rewards_coefficient)."))
    lora_r: int = field(default=16, metadata=help_field("LoRA rank."))
    lora_alpha: int = field(default=32, metadata=help_field("LoRA alpha."))
    lora_dropout: float = field(default=0.0, metadata=help_field("LoRA dropout."))
    lora_top_layers: int | None = field(default=None, metadata=help_field(
        "Put adapters only on the top N transformer layers (None: all). Backpropagation then stops at those "
        "layers, which makes training several times cheaper on a CPU."))
    lora_target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS),
                                           metadata=help_field("Modules that get LoRA adapters."))
    sft_learning_rate: float = field(default=2e-4, metadata=help_field(
        "SFT learning rate for the variants that need an SFT policy (sft-demo, init-sft)."))
    sft_epochs: float = field(default=1.0, metadata=help_field("SFT epochs for those variants."))
    bf16: str = field(default="auto", metadata=help_field("true, false or auto (bf16 where the hardware has it)."))
    system_prompt: str | None = field(default=None, metadata=help_field(
        "System prompt for sampling the negatives, for SFT and for the reward models' inputs (stored in the bundle, "
        "which adds it when scoring a prompt without a system message). Default: the chat template's own."))
    seed: int = field(default=0, metadata=help_field("Seed for sampling, subsetting and initialisation."))
    logging_steps: int = field(default=5, metadata=help_field("Log every N optimizer steps."))
    report_to: str = report_to_field()
    trust_remote_code: bool = field(default=False, metadata=help_field("Allow model code from the model folder."))
    allow_pickle: bool = field(default=False, metadata=help_field("Allow pickle-based (.bin) weights."))

    def __post_init__(self) -> None:
        check_report_to(self.report_to)
        if self.rounds < 1:
            raise ValueError("rounds must be >= 1")
        if self.negatives_per_prompt < 1:
            raise ValueError("negatives_per_prompt must be >= 1")
        for name in ("max_prompts_per_category", "eval_max_prompts_per_category"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (or null for all), got {getattr(self, name)}")
        if self.extra_negative_policy and self.variant == "init-sft":
            raise ValueError("extra_negative_policy needs a demonstration variant: init-sft pairs each SFT sample "
                             "with one initial-model sample")
        if self.variant == "init-demo" and self.rounds > 1:
            raise ValueError("variant 'init-demo' always samples the initial model: rounds > 1 changes nothing")
        if self.variant == "init-sft" and self.rounds > 1:
            raise ValueError("variant 'init-sft' compares the SFT policy with the initial model, neither of which a "
                             "round improves: rounds > 1 would retrain the same model")
        if self.negatives not in NEGATIVE_KINDS:
            raise ValueError(f"negatives must be one of {', '.join(NEGATIVE_KINDS)}, got {self.negatives!r}")
        for name in ("refusals_per_prompt", "relevance_negatives"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.on_policy_samples < 0 or self.on_policy_pairs_per_prompt < 1:
            raise ValueError(f"on_policy_samples must be >= 0 and on_policy_pairs_per_prompt >= 1, got "
                             f"{self.on_policy_samples} and {self.on_policy_pairs_per_prompt}")
        if self.on_policy_samples == 1:
            raise ValueError("on_policy_samples: 1 cannot pair a sample with another; use 0 (off) or at least 2")
        if self.extra_negative_policy and 0 < self.on_policy_samples < self.negatives_per_prompt:
            raise ValueError(f"on_policy_samples ({self.on_policy_samples}) must be at least negatives_per_prompt "
                             f"({self.negatives_per_prompt}): the warm start's negatives are the first of its samples")
        # init-sft ignores it like `negatives` (its pairs are samples already), so one reward section serves all.
        if self.on_policy_samples and self.variant != "init-sft" and self.negatives != "controlled":
            raise ValueError("on_policy_samples needs negatives: controlled")
        if self.overrefusal_split is not None:
            if self.overrefusal_split in ("test", "train"):
                raise ValueError(f"overrefusal_split must name a split other than train and test, got "
                                 f"{self.overrefusal_split!r}")
            if self.negatives != "controlled" or not self.extra_negative_policy:
                raise ValueError("overrefusal_split needs negatives: controlled and an extra_negative_policy")
        if self.pooled_epochs is not None and self.pooled_epochs <= 0:
            raise ValueError(f"pooled_epochs must be > 0, got {self.pooled_epochs}")
        if self.sft_policy and self.variant not in ("sft-demo", "init-sft"):
            raise ValueError("sft_policy is used by the variants sft-demo and init-sft only")
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(VARIANTS)}, got {self.variant!r}")
        if self.mode not in ("lora", "full"):
            raise ValueError(f"mode must be 'lora' or 'full', got {self.mode!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_length < 8:
            raise ValueError(f"max_length must be >= 8, got {self.max_length}")
        if self.mode == "lora" and not self.lora_target_modules:
            raise ValueError("mode 'lora' needs at least one entry in lora_target_modules")

    @property
    def effective_negatives(self) -> str:
        """The negatives training uses: init-sft pairs samples whatever ``negatives`` says."""
        return "policy" if self.variant == "init-sft" else self.negatives

    @property
    def backbone_ref(self) -> str:
        return self.backbone or self.policy

    def generation_settings(self) -> GenerationSettings:
        return GenerationSettings(max_new_tokens=self.negative_max_new_tokens, do_sample=True,
                                  temperature=self.negative_temperature, top_p=self.negative_top_p,
                                  num_return_sequences=self.negatives_per_prompt,
                                  batch_size=self.generation_batch_size, seed=self.seed)

    def on_policy_settings(self) -> GenerationSettings:
        """How the on-policy decision pairs' samples are drawn (``on_policy_samples``)."""
        return dataclasses.replace(self.generation_settings(), temperature=self.on_policy_temperature,
                                   num_return_sequences=self.on_policy_samples)


# ------------------------------------------------------------------------------------------------ data
def load_training_examples(config: RewardTrainConfig) -> dict[str, list[Any]]:
    """Train-split examples with demonstrations, grouped by category (capped deterministically)."""
    from drirl.data.schema import default_taxonomy, load_split, load_taxonomy

    taxonomy = load_taxonomy(config.taxonomy) if config.taxonomy else None
    known = (taxonomy or default_taxonomy()).all_ids
    unknown = [c for c in config.categories if c not in known]
    if unknown:
        raise ConfigError(f"unknown categor{'y' if len(unknown) == 1 else 'ies'} {', '.join(map(repr, unknown))} "
                          f"(taxonomy: {', '.join(known)})", key="categories")
    examples = load_split(config.data, "train", taxonomy=taxonomy, with_demonstration=True,
                          require_demonstration=bool(config.data))
    wanted = set(config.categories)
    grouped: dict[str, list[Any]] = defaultdict(list)
    for example in examples:
        if wanted and example.category not in wanted:
            continue
        if example.category == "benign" and not config.include_benign and not wanted:
            continue
        grouped[example.category].append(example)
    if SINGLE_MODEL in grouped:
        raise DataError(f"category id '{SINGLE_MODEL}' is reserved for the single reward model of a bundle",
                        file=config.data or "bundled data", field="category")
    if wanted - set(grouped):
        raise DataError(f"no training demonstrations for categories: {', '.join(sorted(wanted - set(grouped)))}",
                        file=config.data or "bundled data", field="category")
    if not grouped:
        raise DataError("no training demonstrations", file=config.data or "bundled data")
    rng = random.Random(config.seed)
    for category, items in grouped.items():
        items.sort(key=lambda e: e.id)
        if config.max_prompts_per_category and len(items) > config.max_prompts_per_category:
            grouped[category] = sorted(rng.sample(items, config.max_prompts_per_category), key=lambda e: e.id)
    return dict(sorted(grouped.items()))


def load_overrefusal_examples(config: RewardTrainConfig) -> list[Any]:
    """Benign examples with a demonstration from ``config.overrefusal_split`` (never the test split)."""
    from drirl.data.schema import load_split, load_taxonomy

    if not config.overrefusal_split:
        return []
    taxonomy = load_taxonomy(config.taxonomy) if config.data and config.taxonomy else None
    examples = load_split(config.data, config.overrefusal_split, taxonomy=taxonomy, skip_invalid=True,
                          with_demonstration=True)
    return sorted((e for e in examples if e.category == "benign"), key=lambda e: e.id)


def build_pairs(examples: list[Any], positives: dict[str, list[str]] | None,
                negatives: dict[str, list[str]]) -> list[dict[str, Any]]:
    """(prompt, chosen, rejected) pairs: each of an example's k negatives against its positive.

    ``positives`` None means the demonstration is the positive; otherwise the i-th positive sample is paired
    with the i-th negative sample of the same prompt (AfD's init-sft).
    """
    pairs = []
    identical = 0
    for example in examples:
        rejected = negatives.get(example.id, [])
        chosen = [example.demonstration] * len(rejected) if positives is None else positives.get(example.id, [])
        for i, (good, bad) in enumerate(zip(chosen, rejected, strict=False)):
            if good.strip() == bad.strip():
                identical += 1  # no preference: the Bradley-Terry gradient of such a pair is zero
                continue
            pairs.append({"id": f"{example.id}/{i}", "prompt": example.prompt, "category": example.category,
                          "chosen": good, "rejected": bad})
    if identical:
        logger.info("dropped %d pair(s) whose positive and negative are identical", identical)
    return pairs


# ------------------------------------------------------------------------------------------------ training
def _lora_config(config: RewardTrainConfig):
    from peft import LoraConfig, TaskType

    return LoraConfig(task_type=TaskType.SEQ_CLS, r=config.lora_r, lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=list(config.lora_target_modules),
                      layers_to_transform=top_layers(config.backbone_ref, config.lora_top_layers),
                      modules_to_save=["score"])


def fit_reward_model(pairs: list[dict[str, Any]], config: RewardTrainConfig, tokenizer: Any, output_dir: Path,
                     work_dir: Path, *, init_from: Path | None = None,
                     num_train_epochs: float | None = None) -> dict[str, Any]:
    """Fit one reward model on ``pairs`` with TRL's RewardTrainer; save adapter or model into ``output_dir``.

    The pairs are tokenized here (:func:`encode_pair`, identical to scoring time, with ``config.system_prompt``
    rendered the way generation renders it), so TRL gets ``chosen_ids`` / ``rejected_ids`` and applies no template or
    truncation of its own. ``init_from``: a model of the same mode (a LoRA adapter with its head, or a full model)
    to start from instead of the backbone, e.g. the pooled model of ``init_from_pooled``.
    """
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    from drirl.models import check_weights_are_safe, fix_special_tokens, resolve_model
    from drirl.reward.bundle import _quiet_load
    from drirl.trainer_setup import seed_everything, trainer_arguments, warn_if_warmup_only

    if not pairs:
        raise DataError(f"no training pairs for the reward model {output_dir.name} (every negative equals its "
                        "positive, or no negatives were sampled)", field="category")
    seed_everything(config.seed)
    backbone = resolve_model(config.backbone_ref)
    check_weights_are_safe(backbone, config.allow_pickle)
    safe = {} if config.allow_pickle else {"use_safetensors": True}
    start = str(init_from) if init_from is not None and config.mode == "full" else backbone
    model = _quiet_load(AutoModelForSequenceClassification, start, num_labels=1, dtype=torch.float32,
                        trust_remote_code=config.trust_remote_code, **safe)
    fix_special_tokens(tokenizer, model)
    max_length = fit_max_length(config.max_length, model, tokenizer, where=f"reward model {output_dir.name}")
    peft_config = _lora_config(config) if config.mode == "lora" else None
    if init_from is not None and config.mode == "lora":
        from peft import PeftModel

        # The pooled adapter and its score head, trainable: this category's model continues from them.
        model = PeftModel.from_pretrained(model, str(init_from), is_trainable=True)
        peft_config = None
    stats: dict[str, int] = {}
    rows = [{"chosen_ids": encode_pair(tokenizer, as_messages(p["prompt"], config.system_prompt), p["chosen"],
                                       max_length, stats),
             "rejected_ids": encode_pair(tokenizer, as_messages(p["prompt"], config.system_prompt), p["rejected"],
                                         max_length, stats)} for p in pairs]
    if stats.get("truncated"):
        logger.warning("reward model %s: %d of %d sequence(s) longer than max_length %d tokens keep their last %d "
                       "tokens", output_dir.name, stats["truncated"], 2 * len(rows), max_length, max_length)
    args = RewardConfig(**trainer_arguments(
        str(work_dir), seed=config.seed, learning_rate=config.learning_rate, bf16=config.bf16,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        num_train_epochs=config.num_train_epochs if num_train_epochs is None else num_train_epochs,
        logging_steps=config.logging_steps, report_to=config.report_to),
        max_length=None, center_rewards_coefficient=config.center_rewards_coefficient,
        remove_unused_columns=False, lr_scheduler_type=config.lr_scheduler_type,
        # transformers 5 dropped warmup_ratio: a float below 1 in warmup_steps is read as the ratio.
        warmup_steps=float(config.warmup_ratio))
    warmup_only = warn_if_warmup_only(args, len(rows), f"reward model {output_dir.name}")
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                            processing_class=tokenizer,
                            peft_config=peft_config)
    started = time.time()
    use_concise_logging(trainer)
    result = trainer.train()
    logged = [h for h in trainer.state.log_history if "accuracy" in h]
    metrics = {"train_pairs": len(rows), "truncated_sequences": stats.get("truncated", 0),
               "optimizer_steps": trainer.state.global_step, "warmup_only": warmup_only,
               "train_loss": round(float(result.training_loss), 4),
               "train_accuracy_last_log": round(float(logged[-1]["accuracy"]), 4) if logged else None,
               "train_margin_last_log": round(float(logged[-1]["margin"]), 4) if logged and "margin" in logged[-1]
               else None,
               "train_seconds": round(time.time() - started, 1)}
    model = trainer.accelerator.unwrap_model(trainer.model)
    if trainer.accelerator.is_main_process:
        with atomic_directory(output_dir) as tmp:
            model.save_pretrained(tmp)
            if config.mode == "full":
                tokenizer.save_pretrained(tmp)
    trainer.accelerator.wait_for_everyone()
    shutil.rmtree(work_dir, ignore_errors=True)
    return metrics


class SFTPolicyTrainer(Protocol):
    """Trains the SFT policy AfD's variants sample from (sft-demo, init-sft) on ``examples``' demonstrations, writes
    it to ``output`` and returns the model's folder."""

    def __call__(self, examples: list[Any], output: Path) -> str: ...


def _sft_policy(config: RewardTrainConfig, grouped: dict[str, list[Any]], work: Path,
                train_sft_policy: SFTPolicyTrainer | None) -> str:
    """The SFT policy AfD's variants sample from: ``config.sft_policy`` when given, else one trained once on all
    categories' demonstrations by ``train_sft_policy``."""
    if config.sft_policy:
        return config.sft_policy
    target = work / "sft-policy"
    if (target / "config.json").is_file():
        return str(target)
    assert train_sft_policy is not None  # checked by _check_policy_steps before any work
    return str(train_sft_policy([e for items in grouped.values() for e in items], target))


class PolicyImprover(Protocol):
    """The policy step between two IRL rounds: improve ``policy`` against the bundle ``reward_models``, write the
    result under ``output`` and return the improved model's folder. ``examples`` are the reward models' training
    prompts (the step should see only categories the bundle scores)."""

    def __call__(self, policy: str, reward_models: Path, output: Path, examples: list[Any]) -> str: ...


def _check_policy_steps(config: RewardTrainConfig, improve_policy: PolicyImprover | None,
                        train_sft_policy: SFTPolicyTrainer | None) -> None:
    """The policy steps this stage does not own are passed in (the alignment stage sits above it): an error before
    any work when one is needed and missing."""
    if config.rounds > 1 and config.variant != "init-demo" and improve_policy is None:
        raise ConfigError(f"rounds = {config.rounds} needs a policy step between rounds: pass improve_policy "
                          "(drirl.align.recipe.align_policy_improver(config)); drirl reward train and drirl run "
                          "pass it", key="rounds")
    if config.variant in ("sft-demo", "init-sft") and not config.sft_policy and train_sft_policy is None:
        raise ConfigError(f"variant {config.variant} samples an SFT policy: set sft_policy, or pass train_sft_policy "
                          "(drirl.align.baselines.afd_sft_trainer(config)); drirl reward train and drirl run pass "
                          "it", key="sft_policy")


def _improve_policy(improver: PolicyImprover, policy: str, bundle: Path, work: Path, round_index: int,
                    examples: list[Any]) -> str:
    """One policy-improvement step of the ML-IRL alternation (resumable: a finished step is reused)."""
    target = work / f"policy-round{round_index + 1}"
    for done in (target / "model", target):  # run_align saves the merged policy to <output>/model
        if (done / "config.json").is_file():
            return str(done)
    return str(improver(policy, bundle, target, examples))


def _model_ref_for_manifest(reference: str) -> str:
    """A local folder is recorded as an absolute path (the bundle is read from anywhere); an alias or hub id as is."""
    path = Path(reference).expanduser()
    return str(path.resolve()) if path.is_dir() else reference


def _token_counter(tokenizer: Any) -> Callable[[str], int]:
    """Tokens of a text under the reward backbone's tokenizer: the length both sides of a pair are matched in."""
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _controlled_pairs_by_model(config: RewardTrainConfig, groups: dict[str, list[Any]],
                               negatives: dict[str, list[str]], all_examples: list[Any],
                               tokenizer: Any) -> dict[str, list[dict[str, Any]]]:
    """``negatives: controlled``: each model's pairs by :func:`drirl.reward.decision.controlled_pairs`."""
    from drirl.reward.decision import controlled_pairs, default_refusal_judge, refusal_sources

    sources = refusal_sources([e for e in all_examples if e.category != "benign"])
    judge = default_refusal_judge()
    count = _token_counter(tokenizer)
    result = {}
    for name, items in groups.items():
        pairs = controlled_pairs(items, negatives, sources=sources, refusals_per_prompt=config.refusals_per_prompt,
                                 relevance_negatives=config.relevance_negatives, is_refusal=judge, count=count,
                                 seed=config.seed)
        kinds: dict[str, int] = defaultdict(int)
        for pair in pairs:
            kinds[pair["kind"]] += 1
        logger.info("%s: %d controlled pairs (%s)", name, len(pairs), ", ".join(f"{k} {v}" for k, v in kinds.items()))
        result[name] = pairs
    return result


def _on_policy_pairs_by_model(config: RewardTrainConfig, groups: dict[str, list[Any]], all_examples: list[Any],
                              tokenizer: Any, source: str) -> dict[str, list[dict[str, Any]]]:
    """``on_policy_samples``: the samples of ``source`` (the policy GRPO starts from) paired by their decision, per
    model of ``groups``."""
    from drirl.reward.decision import default_decision_labeler, on_policy_pairs

    samples = sample_negatives(source, all_examples, config.on_policy_settings(),
                               cache_root=config.negatives_cache, system_prompt=config.system_prompt)
    label, count = default_decision_labeler(), _token_counter(tokenizer)
    result = {name: on_policy_pairs(items, samples, label=label, count=count,
                                    pairs_per_prompt=config.on_policy_pairs_per_prompt, seed=config.seed)
              for name, items in groups.items()}
    logger.info("on-policy decision pairs from %s (%d samples per prompt): %s", source,
                config.on_policy_samples, ", ".join(f"{name} {len(pairs)}" for name, pairs in result.items()))
    return result


def _overrefusal_pairs(config: RewardTrainConfig, examples: list[Any], settings: GenerationSettings,
                       tokenizer: Any) -> list[dict[str, Any]]:
    """The warm start's refusals on benign prompts it was not trained on, each against the prompt's demonstration."""
    from drirl.reward.decision import controlled_pairs, default_refusal_judge

    samples = sample_negatives(str(config.extra_negative_policy), examples, settings,
                               cache_root=config.negatives_cache, system_prompt=config.system_prompt)
    pairs = controlled_pairs(examples, samples, sources={}, refusals_per_prompt=0, relevance_negatives=0,
                             is_refusal=default_refusal_judge(), count=_token_counter(tokenizer),
                             seed=config.seed)
    logger.info("over-refusal split %r: %d refusal(s) of %s on %d benign prompts", config.overrefusal_split,
                len(pairs), config.extra_negative_policy, len(examples))
    return pairs


def train_reward_models(config: RewardTrainConfig, *, improve_policy: PolicyImprover | None = None,
                        train_sft_policy: SFTPolicyTrainer | None = None) -> Path:
    """Train the bundle; resumable (finished models in ``<output>.partial`` are kept). Returns its path.

    The policy steps belong to the alignment stage and are passed in: ``improve_policy``, the step between rounds
    (needed when ``rounds`` > 1; :func:`drirl.align.recipe.align_policy_improver` is a GRPO run), and
    ``train_sft_policy``, the SFT policy of sft-demo / init-sft without ``sft_policy``
    (:func:`drirl.align.baselines.afd_sft_trainer`).
    """
    from drirl.models import load_tokenizer, resolve_model

    if not config.output:
        raise ConfigError("missing required field", key="output")
    _check_policy_steps(config, improve_policy, train_sft_policy)
    output = Path(config.output)
    work = output.with_name(output.name + ".partial")
    grouped = load_training_examples(config)
    # Every model reference must resolve before <output>.partial is created: a typo leaves nothing behind.
    for reference in dict.fromkeys((config.policy, config.backbone_ref, config.extra_negative_policy,
                                    config.sft_policy)):
        if reference:
            resolve_model(reference)
    all_examples = [e for items in grouped.values() for e in items]
    # Rank 0 alone touches the work folder; the others wait and then read what it holds.
    on_main(prepare_work_dir, work, {"config": output_settings(config),
                                     "data": sha256_json([e.to_dict() for e in all_examples])[:16]})
    on_main(remove_temporaries, work)  # what a killed run was writing when it died
    settings = config.generation_settings()
    tokenizer = load_tokenizer(config.backbone_ref, trust_remote_code=config.trust_remote_code,
                               padding_side="right")
    logger.info("reward models: variant %s, mode %s, %s, %d categories, %d prompts", config.variant, config.mode,
                "one per category" if config.per_category else "one model for all", len(grouped),
                len(all_examples))

    positive_policy = (_sft_policy(config, grouped, work, train_sft_policy)
                       if config.variant in ("sft-demo", "init-sft") else None)
    overrefusal_examples = load_overrefusal_examples(config)
    if config.overrefusal_split and not overrefusal_examples:
        logger.warning("overrefusal_split %r: no benign examples with a demonstration in that split",
                       config.overrefusal_split)
    policy = config.policy
    metrics: dict[str, Any] = {}
    groups = grouped if config.per_category else {SINGLE_MODEL: all_examples}
    for round_index in range(config.rounds):
        round_dir = work / f"round{round_index + 1}"
        sampler = {"demo-vs-policy": policy, "init-demo": config.policy, "sft-demo": positive_policy,
                   "init-sft": config.policy}[config.variant]
        negatives = sample_negatives(sampler, all_examples, settings, cache_root=config.negatives_cache,
                                     system_prompt=config.system_prompt)
        if config.extra_negative_policy:
            # With on-policy pairs the warm start is sampled once, at their settings: the first
            # negatives_per_prompt of its samples are its negatives, all of them feed the on-policy pairs.
            extra = sample_negatives(config.extra_negative_policy, all_examples,
                                     config.on_policy_settings() if config.on_policy_samples else settings,
                                     cache_root=config.negatives_cache, system_prompt=config.system_prompt)
            negatives = {key: samples + extra.get(key, [])[:config.negatives_per_prompt]
                         for key, samples in negatives.items()}
        positives = None
        if config.variant == "init-sft":
            positives = sample_negatives(positive_policy, all_examples, settings, cache_root=config.negatives_cache,
                                         system_prompt=config.system_prompt)
        if config.effective_negatives == "controlled":
            pairs_by_model = _controlled_pairs_by_model(config, groups, negatives, all_examples, tokenizer)
            if overrefusal_examples:
                benign_model = "benign" if config.per_category else SINGLE_MODEL
                if benign_model in pairs_by_model:
                    pairs_by_model[benign_model] = pairs_by_model[benign_model] + _overrefusal_pairs(
                        config, overrefusal_examples, settings, tokenizer)
            if config.on_policy_samples:
                source = str(config.extra_negative_policy or sampler)
                for name, pairs in _on_policy_pairs_by_model(config, groups, all_examples, tokenizer,
                                                             source).items():
                    pairs_by_model[name] = pairs_by_model[name] + pairs
        else:
            pairs_by_model = {name: build_pairs(items, positives, negatives) for name, items in groups.items()}
        data_hash = sha256_json(pairs_by_model)[:16]
        metrics = {}
        pooled: Path | None = None
        if config.init_from_pooled and config.per_category:
            pooled = round_dir / SINGLE_MODEL
            all_pairs = [p for pairs in pairs_by_model.values() for p in pairs]
            metrics[SINGLE_MODEL] = _fit_once(all_pairs, config, tokenizer, pooled, work, round_index, SINGLE_MODEL,
                                              num_train_epochs=config.pooled_epochs)
        for name, pairs in pairs_by_model.items():
            metrics[name] = _fit_once(pairs, config, tokenizer, round_dir / name, work, round_index, name,
                                      init_from=pooled)
        models = dict(groups)
        if pooled is not None:
            models[SINGLE_MODEL] = all_examples
        on_main(_write_bundle_manifest, round_dir, config, models, metrics, data_hash, tokenizer, sampler)
        if round_index + 1 < config.rounds and config.variant != "init-demo":
            assert improve_policy is not None  # checked by _check_policy_steps before any work
            # Each variant improves the policy it samples: sft-demo its SFT policy, demo-vs-policy the policy.
            current = positive_policy if config.variant == "sft-demo" else policy
            improved = _improve_policy(improve_policy, current, round_dir, work, round_index, all_examples)
            if config.variant == "sft-demo":
                positive_policy = improved
            else:
                policy = improved

    on_main(_publish_bundle, work / f"round{config.rounds}", output, work)
    logger.info("reward-model bundle written to %s", output)
    return output


def _publish_bundle(final_round: Path, output: Path, work: Path) -> None:
    """Copy the last round's models and manifest to ``output`` atomically, then drop the work folder."""
    with atomic_directory(output) as tmp:
        for item in final_round.iterdir():
            if is_temporary(item):
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copy2(item, tmp / item.name)
    shutil.rmtree(work, ignore_errors=True)


def _fit_once(pairs: list[dict[str, Any]], config: RewardTrainConfig, tokenizer: Any, target: Path, work: Path,
              round_index: int, name: str, **kwargs: Any) -> dict[str, Any]:
    """Fit one model unless a resumed run already finished it; its metrics are kept beside the work folder."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}  # fit_reward_model's defaults otherwise
    metrics_file = work / "metrics" / f"round{round_index + 1}-{name}.json"
    if _is_model_folder(target) and metrics_file.is_file():
        logger.info("round %d, %s: already trained, skipping", round_index + 1, name)
        return json.loads(metrics_file.read_text(encoding="utf-8"))
    logger.info("round %d, %s: %d pairs%s", round_index + 1, name, len(pairs),
                f", starting from {kwargs['init_from'].name}" if kwargs.get("init_from") else "")
    metrics = fit_reward_model(pairs, config, tokenizer, target, work / "trainer" / name, **kwargs)
    on_main(atomic_write_json, metrics_file, metrics)
    return metrics


def _is_model_folder(path: Path) -> bool:
    return (path / "adapter_config.json").is_file() or (path / "config.json").is_file()


def _write_bundle_manifest(folder: Path, config: RewardTrainConfig, groups: dict[str, list[Any]],
                           metrics: dict[str, Any], data_hash: str, tokenizer: Any, sampled_from: str | None) -> None:
    tokenizer.save_pretrained(folder / "tokenizer")
    categories = sorted({e.category for items in groups.values() for e in items})
    atomic_write_json(folder / MANIFEST, {
        "format": BUNDLE_FORMAT,
        "backbone": _model_ref_for_manifest(config.backbone_ref),
        "policy": _model_ref_for_manifest(config.policy),
        "negatives_sampled_from": _model_ref_for_manifest(sampled_from) if sampled_from else None,
        "extra_negatives_sampled_from": (_model_ref_for_manifest(config.extra_negative_policy)
                                         if config.extra_negative_policy else None),
        "mode": config.mode,
        "variant": config.variant,
        "negatives": config.effective_negatives,
        "init_from_pooled": config.init_from_pooled and config.per_category,
        "per_category": config.per_category,
        "categories": categories,
        "rounds": config.rounds,
        "max_length": config.max_length,
        "system_prompt": config.system_prompt,
        "generation": config.generation_settings().key(),
        "data": str(Path(config.data).resolve()) if config.data else "bundled",
        "data_hash": data_hash,
        "models": {name: {"path": name, "prompts": len(items), "metrics": metrics.get(name, {})}
                   for name, items in groups.items()},
        "config": config_to_dict(config),
    })
