"""How a (prompt, response) pair is shown to a reward model, identically at training and at scoring time."""

from __future__ import annotations

import logging
from typing import Any

from drirl.generation import as_messages

logger = logging.getLogger(__name__)


def completion_text(completion: Any) -> str:
    """TRL hands conversational completions as message lists; plain text stays as it is."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    return "" if completion is None else str(completion)


def encode_pair(tokenizer: Any, prompt: Any, response: str, max_length: int,
                stats: dict[str, int] | None = None) -> list[int]:
    """Token ids of the chat-formatted conversation (prompt, response).

    Too-long inputs keep their *last* ``max_length`` tokens: the scalar head reads the final token, so the end of
    the response must survive truncation. ``stats["truncated"]`` counts the pairs cut that way.
    """
    messages = [*as_messages(prompt), {"role": "assistant", "content": completion_text(response)}]
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    else:
        text = "\n".join(m["content"] for m in messages) + (tokenizer.eos_token or "")
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) <= max_length:
        return ids
    if stats is not None:
        stats["truncated"] = stats.get("truncated", 0) + 1
    return ids[-max_length:]


def fit_max_length(max_length: int, model: Any, tokenizer: Any, *, where: str) -> int:
    """``max_length`` capped at the model's context (:func:`drirl.generation.context_limit`), with a warning when
    the cap binds: past its position limit a model either fails (learned positions) or silently degrades."""
    from drirl.generation import context_limit

    limit = context_limit(model, tokenizer)
    if limit is not None and max_length > limit:
        logger.warning("%s: max_length %d exceeds the model's context of %d tokens; using %d", where, max_length,
                       limit, limit)
        return limit
    return max_length
