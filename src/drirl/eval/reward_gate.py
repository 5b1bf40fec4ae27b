"""A cheap gate before reinforcement learning: Best-of-N from the SFT model under the reward bundle.

If choosing the best of N samples of the SFT model by the bundle's reward does not raise refusal on harmful prompts
while keeping benign and borderline prompts answered, the rewards cannot lead GRPO anywhere better either. This module
only picks the responses (greedy ones beside them for comparison); judging and reporting them is the caller's job.
"""

from __future__ import annotations

import os
from typing import Any

from drirl.errors import DataError


def best_of_n_gate(sft_model: str, bundle_dir: str | os.PathLike, *, data: str | os.PathLike | None = None,
                   n: int = 8, max_new_tokens: int = 96, temperature: float = 1.0, top_p: float = 1.0,
                   max_prompts_per_category: int | None = None, batch_size: int = 16, seed: int = 0,
                   greedy: bool = True, bf16: bool | str = "auto", bundle: Any = None,
                   policy: tuple[Any, Any] | None = None, split: str = "test") -> list[dict[str, Any]]:
    """Best of ``n`` samples of ``sft_model`` per prompt of ``split``, chosen by the bundle's reward.

    Args:
        sft_model: the SFT policy (folder or alias) to sample.
        bundle_dir: reward-model bundle; each prompt is scored by the model of its category, with the bundle's
            system prompt (which also renders the prompt for sampling, so both see one rendering).
        data: examples whose ``split`` gives the prompts (default: the bundled set).
        split: ``test`` to report (the pipeline's gate), ``validation`` to choose settings.
        n, max_new_tokens, temperature, top_p, seed: sampling of the candidates.
        max_prompts_per_category: cap on test prompts per category (the first by id); default all.
        greedy: also return the greedy response of the same model, the baseline the gate is compared with.
        bundle / policy: an already loaded :class:`~drirl.reward.bundle.CategoryRewardModels` / (model, tokenizer).

    Returns one row per test prompt: ``id``, ``category``, ``prompt``, ``response`` (the best of n),
    ``reward`` (its score), ``greedy`` (when asked for).
    """
    from drirl.align.baselines import BestOfNConfig, best_of_n
    from drirl.data.schema import load_split
    from drirl.generation import GenerationSettings, generate
    from drirl.models import load_policy
    from drirl.reward.bundle import CategoryRewardModels

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if bundle is None:
        bundle = CategoryRewardModels(bundle_dir, batch_size=batch_size, bf16=bf16)
    examples = load_split(data, split, skip_invalid=True)
    scored = set(bundle.categories) or None  # a single-model bundle scores every category
    by_category: dict[str, list[Any]] = {}
    for example in sorted(examples, key=lambda e: e.id):
        if scored is None or example.category in scored:
            by_category.setdefault(example.category, []).append(example)
    chosen = [e for items in by_category.values() for e in items[:max_prompts_per_category]]
    if not chosen:
        raise DataError(f"no {split}-split prompts in the bundle's categories", file=str(data or "bundled data"),
                        field="split")
    model, tokenizer = policy if policy is not None else load_policy(sft_model)
    prompts = [e.prompt for e in chosen]
    categories = [e.category for e in chosen]
    config = BestOfNConfig(n=n, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                           batch_size=batch_size, seed=seed, system_prompt=bundle.system_prompt)
    best = best_of_n(model, tokenizer, prompts, categories, bundle.score, config)
    rewards = bundle.score(prompts, best, categories)
    greedy_texts: list[str] = []
    if greedy:
        settings = GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False, batch_size=batch_size,
                                      seed=seed)
        greedy_texts = [options[0] for options in generate(model, tokenizer, prompts, settings,
                                                           system_prompt=bundle.system_prompt,
                                                           description="greedy responses")]
    rows = []
    for i, example in enumerate(chosen):
        row = {"id": example.id, "category": example.category, "prompt": example.prompt, "response": best[i],
               "reward": rewards[i]}
        if greedy:
            row["greedy"] = greedy_texts[i]
        rows.append(row)
    return rows
