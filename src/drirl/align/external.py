"""An external reward model (one sequence classifier for every prompt): the ablation against IRL rewards."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from drirl.reward.scoring import completion_text, encode_pair


class ExternalRewardModel:
    """Scores (prompt, completion) with the scalar (or last-label) logit of a sequence-classification model."""

    def __init__(self, reference: str, *, batch_size: int = 16, max_length: int = 512, bf16: bool | str = "auto",
                 allow_pickle: bool = False, device: str | None = None):
        import torch
        from transformers import AutoModelForSequenceClassification

        from drirl.models import check_weights_are_safe, fix_special_tokens, load_tokenizer, resolve_model
        from drirl.trainer_setup import resolve_bf16

        resolved = resolve_model(reference)
        check_weights_are_safe(resolved, allow_pickle)
        self.tokenizer = load_tokenizer(reference, padding_side="right")
        self.model = AutoModelForSequenceClassification.from_pretrained(resolved, use_safetensors=not allow_pickle)
        fix_special_tokens(self.tokenizer, self.model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.batch_size, self.max_length, self.use_bf16 = batch_size, max_length, resolve_bf16(bf16)
        self.__name__ = "external_reward"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **_: Any) -> list[float]:
        import torch

        encoded = [encode_pair(self.tokenizer, p, completion_text(c), self.max_length)
                   for p, c in zip(prompts, completions, strict=False)]
        scores: list[float] = []
        for start in range(0, len(encoded), self.batch_size):
            batch = encoded[start:start + self.batch_size]
            padded = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt").to(self.device)
            with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
                logits = self.model(**padded).logits.float()
            scores.extend(logits[:, -1].cpu().tolist())
        return scores
