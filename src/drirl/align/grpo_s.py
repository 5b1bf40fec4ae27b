"""GRPO-S: TRL's GRPOTrainer with dynamic reward scaling (METHOD.md §2.4).

The whole change to GRPO is one multiplication, A_i ← α_i · A_i, done in two small overrides of TRL's hooks:

* ``_calculate_rewards`` (TRL gathers the rewards of every process there): compute each completion's hardness δ
  and reward gap locally, gather them like TRL gathers rewards, and compute α on the gathered groups, so α is
  identical with 1 or N processes;
* ``_generate_and_score_completions``: multiply this process's slice of TRL's advantages by the same slice of α.

The math itself lives in :mod:`drirl.align.scaling` (the formulas) and :mod:`drirl.align.scaling_batch` (applied
to a batch of groups); this module is plumbing only.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from trl import GRPOConfig, GRPOTrainer

from drirl.align.scaling import greedy_match_similarity, hardness_delta, hardness_text
from drirl.align.scaling_batch import CategoryRunningMean, compute_group_scaling
from drirl.align.settings import ScalingConfig, check_outlier_tau
from drirl.errors import ConfigError, DataError
from drirl.responses import sentence_splitter, split_sentences
from drirl.reward.scoring import completion_text

logger = logging.getLogger(__name__)

SCALING_STATE_FILE = "drirl_scaling_state.json"


@dataclass
class GRPOSConfig(GRPOConfig, ScalingConfig):
    """GRPOConfig plus the dynamic reward scaling settings, inherited from :class:`ScalingConfig` (their one home)."""

    compile_generation: bool = field(default=False, metadata={
        "help": "Compile the decoding step of rollouts with torch.compile (with cache_implementation='static'); "
                "TRL turns compilation off in its generation config."})

    def __post_init__(self) -> None:
        super().__post_init__()
        # TrainingArguments.__post_init__ does not chain to the mixin's, so the scaling fields are checked here.
        self.check_scaling()
        check_outlier_tau(self.scaling_outlier_tau, self.scaling_outlier_tau_relative, self.num_generations)
        # transformers reads max_steps <= 0 as "train num_train_epochs epochs instead": a silent, much longer run
        # for a user who wrote 0 (-1, its documented "use epochs" value, stays allowed).
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"must be at least 1, got {self.max_steps}", key="max_steps")

    def scaling_config(self) -> ScalingConfig:
        return self.scaling_settings()


class HardnessEncoder:
    """δ_i = 1 − W_i between a response and its demonstration, sentence by sentence in Φ's space.

    Demonstrations are embedded once and cached (they never change); responses are embedded in one batch.
    ``delta_on`` picks the text compared (``scaling_delta_on``): all of it, or the answer part of a Chain-of-Draft
    response and demonstration (:func:`drirl.align.scaling.hardness_text`).
    """

    def __init__(self, encoder: Any, batch_size: int = 64, delta_on: str = "full", splitter: str = "fast"):
        self.encoder = encoder
        self.batch_size = batch_size
        self.delta_on = delta_on
        self.split = sentence_splitter(splitter)
        hardness_text("", delta_on)  # an unknown choice fails here, not at the first step
        self._demo_cache: dict[str, torch.Tensor] = {}

    def _embed(self, sentences: list[str]) -> torch.Tensor:
        if not sentences:
            return torch.zeros(0, 1)
        return self.encoder.encode(sentences, batch_size=self.batch_size, convert_to_tensor=True,
                                   show_progress_bar=False).float().cpu()

    def demo_embeddings(self, demonstration: str) -> torch.Tensor:
        if demonstration not in self._demo_cache:
            self._demo_cache[demonstration] = self._embed(
                split_sentences(hardness_text(demonstration, self.delta_on), self.split))
        return self._demo_cache[demonstration]

    def deltas(self, responses: list[str], demonstrations: list[str]) -> torch.Tensor:
        pieces = [split_sentences(hardness_text(r, self.delta_on), self.split) for r in responses]
        flat = [s for p in pieces for s in p]
        embedded = self._embed(flat)
        out, start = [], 0
        for sentences, demo in zip(pieces, demonstrations, strict=False):
            mine = embedded[start:start + len(sentences)]
            start += len(sentences)
            out.append(hardness_delta(greedy_match_similarity(mine, self.demo_embeddings(demo or ""))))
        return torch.stack(out) if out else torch.zeros(0)


class GRPOSTrainer(GRPOTrainer):
    """GRPOTrainer whose advantages are multiplied by the difficulty factor α (GRPO-S).

    The dataset needs the columns ``prompt``, ``category`` and ``demonstration``. Rewards come from the given
    ``reward_funcs``; the demonstration's reward R_j(q, õ) is taken from a reward function's
    ``demonstration_reward`` method when it has one (cached by :class:`CategoryRewardModels`), else by calling the
    reward functions on the demonstration.
    """

    def __init__(self, *args: Any, text_encoder: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        config: GRPOSConfig = self.args  # type: ignore[assignment]
        if not isinstance(config, GRPOSConfig):
            raise TypeError("GRPOSTrainer needs a GRPOSConfig")
        self.scaling = config.scaling_config()
        self.delta_running = CategoryRunningMean(self.scaling.scaling_running_mean_momentum)
        self.gap_running = CategoryRunningMean(self.scaling.scaling_running_mean_momentum)
        self._hardness: HardnessEncoder | None = None
        if self.scaling.scaling_mode in ("data", "both"):
            if text_encoder is None:
                from drirl.models import load_text_encoder

                text_encoder = load_text_encoder(config.text_encoder, device=str(self.accelerator.device))
            self._hardness = HardnessEncoder(text_encoder, config.encoder_batch_size, config.scaling_delta_on,
                                             config.scaling_sentence_splitter)
        if config.compile_generation and getattr(self, "generation_config", None) is not None:
            # TRL builds its GenerationConfig with disable_compile=True; a static cache then runs eagerly.
            self.generation_config.disable_compile = False
        self._demo_reward_cache: dict[str, float] = {}
        self._pending_scaling = None
        self.last_scaling = None  # the latest GroupScaling, for tests and callbacks
        self.nonfinite_rewards = 0  # NaN/inf rewards met so far (each treated as unscorable)
        self.skipped_prompts = self._drop_overlong_prompts()

    # ---------------------------------------------------------------------------------------------- bad inputs
    def _drop_overlong_prompts(self) -> int:
        """Leave out training prompts that cannot fit the model's context with ``max_completion_length`` new tokens.

        TRL does not truncate prompts: an over-long one would run past the position limit (an index error for
        learned positions, silent garbage for RoPE). Skipping a few training prompts is harmless, so they are
        dropped with a warning that counts them; if none is left, DataError. Returns how many were dropped.
        """
        from drirl.generation import context_limit, prompt_budget, render_prompt

        dataset = self.train_dataset
        tokenizer = self.processing_class
        if dataset is None or not hasattr(dataset, "select") or "prompt" not in (dataset.column_names or []):
            return 0
        limit = context_limit(self.model, tokenizer)
        budget = prompt_budget(limit, self.args.max_completion_length, key="max_completion_length")
        if budget is None:
            return 0
        lengths = [len(tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"])
                   for prompt in dataset["prompt"]]
        keep = [i for i, n in enumerate(lengths) if n <= budget]
        dropped = len(lengths) - len(keep)
        if not dropped:
            return 0
        if not keep:
            raise DataError(f"every training prompt is longer than the {budget} tokens the model's context of "
                            f"{limit} leaves beside max_completion_length {self.args.max_completion_length} "
                            f"(shortest: {min(lengths)} tokens)", field="prompt")
        logger.warning("skipping %d of %d training prompt(s) longer than %d tokens (the model's context of %d minus "
                       "max_completion_length %d); longest: %d tokens", dropped, len(lengths), budget, limit,
                       self.args.max_completion_length, max(lengths))
        self.train_dataset = dataset.select(keep)
        return dropped

    def _mask_nonfinite(self, rewards_per_func: torch.Tensor) -> torch.Tensor:
        """Treat NaN and ±inf rewards alike: NaN, which TRL reads as "unscorable" (advantage 0, left out of the
        group baseline). An inf left in place would make its group's mean and std infinite and zero the advantages
        of every other completion of the group; the logged reward would read inf. Counted in ``rewards/nonfinite``.
        """
        bad = ~torch.isfinite(rewards_per_func)
        count = int(bad.sum().item())
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["rewards/nonfinite"].append(float(count))
        if not count:
            return rewards_per_func
        self.nonfinite_rewards += count
        logger.warning("%d of %d reward(s) this step are NaN/inf: those completions are treated as unscorable "
                       "(advantage 0, left out of their group's baseline and of α's statistics); %d so far", count,
                       rewards_per_func.numel(), self.nonfinite_rewards)
        return rewards_per_func.masked_fill(bad, float("nan"))

    # ---------------------------------------------------------------------------------------------- R_j(q, õ)
    def _demo_rewards(self, inputs: list[dict[str, Any]], prompts: list[Any], completions: list[Any]) -> list[float]:
        values = []
        conversational = bool(completions) and isinstance(completions[0], list)
        for example, prompt in zip(inputs, prompts, strict=False):
            demo = example.get("demonstration") or ""
            category = example.get("category")
            key = json.dumps([prompt, category, demo], sort_keys=True, default=str)
            if key not in self._demo_reward_cache:
                total = 0.0
                for weight, func in zip(self.reward_weights.tolist(), self.reward_funcs, strict=False):
                    if hasattr(func, "demonstration_reward"):
                        value = func.demonstration_reward(prompt, demo, category)
                    elif callable(func) and not isinstance(func, torch.nn.Module):
                        completion = [{"role": "assistant", "content": demo}] if conversational else demo
                        extra = {k: [v] for k, v in example.items() if k not in ("prompt", "completion")}
                        value = func(prompts=[prompt], completions=[completion], **extra)[0]
                    else:
                        raise TypeError("α^M needs callable reward functions (a model object cannot score the "
                                        "demonstration here); use scaling_mode='data' or 'none'")
                    total += weight * (float("nan") if value is None else float(value))
                self._demo_reward_cache[key] = total
            values.append(self._demo_reward_cache[key])
        return values

    # ---------------------------------------------------------------------------------------------- TRL hooks
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        from accelerate.utils import gather, gather_object

        rewards_per_func = self._mask_nonfinite(
            super()._calculate_rewards(inputs, prompts, completions, completion_ids_list))
        self._pending_scaling = None
        # Evaluation only measures rewards: its batches must not move the categories' running means.
        if self.scaling.scaling_mode == "none" or not self.model.training:
            return rewards_per_func
        device = rewards_per_func.device
        count = len(prompts)
        texts = [completion_text(c) for c in completions]
        if self._hardness is not None:
            delta = self._hardness.deltas(texts, [x.get("demonstration") or "" for x in inputs]).to(device)
        else:
            delta = torch.zeros(count, device=device)
        if self.scaling.scaling_mode in ("model", "both"):
            demo = torch.tensor(self._demo_rewards(inputs, prompts, completions), dtype=torch.float32, device=device)
        else:
            demo = torch.zeros(count, device=device)
        delta_all, demo_all = gather(delta.float()), gather(demo)
        categories = gather_object([str(x.get("category")) for x in inputs])
        unscorable = torch.isnan(rewards_per_func).all(dim=1)
        rewards = (rewards_per_func * self.reward_weights.to(device).unsqueeze(0)).nansum(dim=1)
        rewards[unscorable] = torch.nan
        group = self.num_generations if self.model.training else self.num_generations_eval
        self._pending_scaling = compute_group_scaling(
            delta_all.view(-1, group), rewards.view(-1, group), demo_all.view(-1, group)[:, 0],
            categories[::group], self.scaling, delta_running=self.delta_running, gap_running=self.gap_running)
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        scaling, self._pending_scaling = self._pending_scaling, None
        if scaling is None:
            return output
        count = len(inputs)
        start = self.accelerator.process_index * count
        alpha = scaling.alpha.flatten()[start:start + count].to(output["advantages"].device)
        output["advantages"] = output["advantages"] * alpha.to(output["advantages"].dtype)
        self.last_scaling = scaling
        self._log_scaling(scaling, inputs)
        return output

    def _log_scaling(self, scaling: Any, inputs: list[dict[str, Any]]) -> None:
        from accelerate.utils import gather_object

        mode = "train" if self.model.training else "eval"
        metrics = self._metrics[mode]
        group = scaling.alpha.shape[1]
        for name, values in (("alpha", scaling.alpha), ("alpha_data", scaling.alpha_data),
                             ("alpha_model", scaling.alpha_model), ("delta", scaling.delta)):
            flat = values.float().flatten()
            metrics[f"scaling/{name}/mean"].append(flat.mean().item())
            metrics[f"scaling/{name}/std"].append(flat.std().item() if flat.numel() > 1 else 0.0)
            metrics[f"scaling/{name}/min"].append(flat.min().item())
            metrics[f"scaling/{name}/max"].append(flat.max().item())
        metrics["scaling/fraction_clipped"].append(float(scaling.fraction_clipped))
        metrics["scaling/fraction_masked"].append(float(scaling.fraction_masked))
        metrics["scaling/nonfinite_rewards"].append(float(scaling.num_nonfinite_rewards))
        categories = gather_object([str(x.get("category")) for x in inputs])[::group]
        for row, category in enumerate(categories):
            metrics[f"scaling/alpha_by_category/{category}"].append(scaling.alpha[row].float().mean().item())

    # ---------------------------------------------------------------------------------------------- checkpoints
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            from drirl.io import atomic_write_json

            folder = os.path.join(self.args.output_dir, f"checkpoint-{self.state.global_step}")
            atomic_write_json(os.path.join(folder, SCALING_STATE_FILE), self.scaling_state())

    def scaling_state(self) -> dict[str, Any]:
        return {"delta_running": self.delta_running.state_dict(), "gap_running": self.gap_running.state_dict()}

    def load_scaling_state(self, checkpoint: str) -> None:
        path = os.path.join(checkpoint, SCALING_STATE_FILE)
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                state = json.load(handle)
            self.delta_running.load_state_dict(state["delta_running"])
            self.gap_running.load_state_dict(state["gap_running"])
