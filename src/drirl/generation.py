"""Batched chat generation shared by every stage (teacher demonstrations, reward-model negatives, evaluation)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tqdm.auto import tqdm

from drirl.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass
class GenerationSettings:
    max_new_tokens: int = field(default=96, metadata={"help": "Maximum number of new tokens per response."})
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of greedy decoding."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (when do_sample)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass (when do_sample)."})
    num_return_sequences: int = field(default=1, metadata={"help": "Responses per prompt."})
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate() call."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling."})

    def key(self) -> dict[str, Any]:
        """The settings that change the output, for cache keys."""
        return {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample, "temperature": self.temperature,
                "top_p": self.top_p, "num_return_sequences": self.num_return_sequences, "seed": self.seed}


def as_messages(prompt: str | list[dict[str, str]], system_prompt: str | None = None) -> list[dict[str, str]]:
    """A prompt is plain text (one user turn) or a list of chat messages."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system_prompt and (not messages or messages[0].get("role") != "system"):
        messages = [{"role": "system", "content": system_prompt}, *messages]
    return messages


def render_prompt(tokenizer: Any, prompt: str | list[dict[str, str]], system_prompt: str | None = None) -> str:
    """The chat-formatted text that precedes the assistant's answer."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(as_messages(prompt, system_prompt), tokenize=False,
                                             add_generation_prompt=True)
    text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
    return f"{text}\n"


# Above this a tokenizer's model_max_length is transformers' "no limit" sentinel (1e30), not a real context.
_NO_LIMIT = 10_000_000
_POSITION_ATTRIBUTES = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def context_limit(model: Any = None, tokenizer: Any = None) -> int | None:
    """The most tokens the model can attend to: the smallest of its config's position limit and the tokenizer's
    ``model_max_length``; None when neither states one."""
    limits: list[Any] = []
    config = getattr(model, "config", None)
    if config is not None:
        limits.extend(getattr(config, name, None) for name in _POSITION_ATTRIBUTES)
    if tokenizer is not None:
        limits.append(getattr(tokenizer, "model_max_length", None))
    valid = [int(x) for x in limits if isinstance(x, int) and not isinstance(x, bool) and 0 < x < _NO_LIMIT]
    return min(valid) if valid else None


def prompt_budget(limit: int | None, max_new_tokens: int, *, key: str = "max_new_tokens") -> int | None:
    """Tokens left for the prompt once ``max_new_tokens`` are reserved; ConfigError when none are left."""
    if limit is None:
        return None
    if max_new_tokens >= limit:
        raise ConfigError(f"{max_new_tokens} new tokens leave no room for the prompt in the model's context of "
                          f"{limit} tokens; lower it", key=key)
    return limit - max_new_tokens


def generate(model: Any, tokenizer: Any, prompts: Sequence[str | list[dict[str, str]]],
             settings: GenerationSettings | None = None, *, system_prompt: str | None = None,
             progress: bool = True, description: str = "generating", bf16: bool | str = "auto",
             stats: dict[str, Any] | None = None) -> list[list[str]]:
    """Generate ``num_return_sequences`` responses per prompt; returns one list of strings per prompt, in order.

    Prompts are sorted by length before batching so that each batch carries little padding. On a CPU with native
    bf16 (``bf16="auto"``), an fp32 model generates under bf16 autocast, about twice as fast.

    A prompt too long for the model's context (:func:`context_limit`) minus ``max_new_tokens`` keeps its *last*
    tokens, the end of the request and the assistant header the answer follows (TRL truncates prompts on the same
    side); every such prompt is counted, logged as a warning, and reported in ``stats["truncated_prompts"]``. When
    ``max_new_tokens`` alone fills the context, ConfigError.
    """
    import torch

    from drirl.trainer_setup import resolve_bf16

    settings = settings or GenerationSettings()
    texts = [render_prompt(tokenizer, p, system_prompt) for p in prompts]
    limit = context_limit(model, tokenizer)
    budget = prompt_budget(limit, settings.max_new_tokens)
    truncated = 0
    if budget is not None and texts:
        lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
        truncated = sum(n > budget for n in lengths)
        if truncated:
            logger.warning("%s: %d of %d prompt(s) exceed the model's context of %d tokens (%d for the prompt + %d "
                           "new tokens; longest %d) and keep only their last %d tokens", description, truncated,
                           len(texts), limit, budget, settings.max_new_tokens, max(lengths), budget)
    if stats is not None:
        stats["truncated_prompts"] = stats.get("truncated_prompts", 0) + truncated
        stats["prompts"] = stats.get("prompts", 0) + len(texts)
        stats["context_limit"] = limit
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    results: list[list[str]] = [[] for _ in texts]
    tokenizer.padding_side = "left"
    truncation_side = getattr(tokenizer, "truncation_side", "right")
    model.eval()
    device = next(model.parameters()).device
    autocast = device.type == "cpu" and next(model.parameters()).dtype == torch.float32 and resolve_bf16(bf16)
    generator_seed = settings.seed
    bar = tqdm(total=len(texts), desc=description, disable=not progress, leave=False)
    for start in range(0, len(order), settings.batch_size):
        batch_idx = order[start:start + settings.batch_size]
        tokenizer.truncation_side = "left"
        try:
            encoded = tokenizer([texts[i] for i in batch_idx], return_tensors="pt", padding=True,
                                add_special_tokens=False, truncation=truncated > 0,
                                max_length=budget if truncated else None).to(device)
        finally:
            tokenizer.truncation_side = truncation_side
        kwargs: dict[str, Any] = {"max_new_tokens": settings.max_new_tokens, "do_sample": settings.do_sample,
                                  "num_return_sequences": settings.num_return_sequences,
                                  "pad_token_id": tokenizer.pad_token_id}
        if settings.do_sample:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
            # Seed per batch so results do not depend on how many batches ran before (resumable generation).
            torch.manual_seed(generator_seed + start)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            output = model.generate(**encoded, **kwargs)
        new_tokens = output[:, encoded["input_ids"].shape[1]:]
        decoded = tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        for j, i in enumerate(batch_idx):
            n = settings.num_return_sequences
            results[i] = [d.strip() for d in decoded[j * n:(j + 1) * n]]
        bar.update(len(batch_idx))
    bar.close()
    return results
