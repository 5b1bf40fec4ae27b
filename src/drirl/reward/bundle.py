"""A reward-model bundle on disk and the router that scores mixed batches with it.

Layout::

    bundle/
      manifest.json      category -> relative path, backbone, mode (lora | full), variant, data hash, metrics
      tokenizer/         the tokenizer every model of the bundle was trained with
      <category>/        a LoRA adapter (with its scalar head) or a full sequence-classification model

The paper routes by the prompt's category label (no learned router): :class:`CategoryRewardModels` does exactly
that, grouping a mixed batch by category, sorting each group by length so batches carry little padding, and
returning floats in input order. An instance is a TRL reward function (``reward_funcs=[bundle]``).
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drirl.errors import DataError, ModelError
from drirl.generation import as_messages
from drirl.io import safe_join
from drirl.reward.scoring import completion_text, encode_pair, fit_max_length

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "drirl-reward-bundle/1"
SINGLE_MODEL = "all"
FALLBACKS = ("error", "single", "mean")


def read_manifest(bundle_dir: str | Path) -> dict[str, Any]:
    """Read and check ``manifest.json``: format, required fields, and that every model path stays inside."""
    if Path(bundle_dir).is_file():
        raise ModelError(f"{bundle_dir} is a file, not a reward-model bundle: give the folder `drirl reward train` "
                         f"wrote (it holds {MANIFEST})")
    path = Path(bundle_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{bundle_dir} is not a reward-model bundle: {MANIFEST} is missing") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(f"malformed JSON: {err}", file=str(path)) from None
    if not isinstance(manifest, dict):
        raise DataError("the manifest must be a JSON object", file=str(path))
    if manifest.get("format") != BUNDLE_FORMAT:
        raise DataError(f"unsupported bundle format {manifest.get('format')!r}, expected {BUNDLE_FORMAT}",
                        file=str(path), field="format")
    for field in ("backbone", "mode", "models"):
        if field not in manifest:
            raise DataError("missing field", file=str(path), field=field)
    if manifest["mode"] not in ("lora", "full"):
        raise DataError(f"mode must be 'lora' or 'full', got {manifest['mode']!r}", file=str(path), field="mode")
    max_length = manifest.get("max_length")
    if max_length is not None and (not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1):
        raise DataError(f"must be a positive integer, got {max_length!r}", file=str(path), field="max_length")
    models = manifest["models"]
    if not isinstance(models, dict) or not models:
        raise DataError("must map at least one category to its model", file=str(path), field="models")
    for category, entry in models.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("path"), str) or not entry["path"]:
            raise DataError("each entry needs a relative 'path'", file=str(path), field=f"models.{category}.path")
        try:
            target = safe_join(bundle_dir, entry["path"])  # refuses paths that leave the bundle
        except DataError:
            raise DataError(f"path {entry['path']!r} points outside the bundle {bundle_dir}", file=str(path),
                            field=f"models.{category}.path") from None
        if target == Path(bundle_dir).resolve():
            raise DataError("a model path must name a folder inside the bundle, not the bundle itself",
                            file=str(path), field=f"models.{category}.path")
    return manifest


class CategoryRewardModels:
    """Score (prompt, completion) pairs with the reward model of each pair's category.

    Args:
        bundle_dir: folder written by ``drirl reward train``.
        fallback: what an unknown category gets: ``"error"`` (default), ``"single"`` (the bundle's single model,
            which must exist) or ``"mean"`` (the mean of all category models' scores).
        batch_size: pairs per forward pass.
        device: torch device; default CUDA when available, else CPU.
        bf16: run the forward in bfloat16 (``"auto"``: where the hardware supports it natively).
        max_length: token budget of a pair; default the one the bundle was trained with.
        allow_pickle: allow pickle-based (.bin) weights.

    A bundle trained as one model for all categories (``per_category: false``) scores every category with it.
    """

    def __init__(self, bundle_dir: str | Path, *, fallback: str = "error", batch_size: int = 16,
                 device: str | None = None, bf16: bool | str = "auto", max_length: int | None = None,
                 allow_pickle: bool = False):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from drirl.models import check_weights_are_safe, fix_special_tokens, resolve_model
        from drirl.trainer_setup import resolve_bf16

        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.bundle_dir = Path(bundle_dir)
        self.manifest = read_manifest(self.bundle_dir)
        self.fallback = fallback
        self.batch_size = batch_size
        self.max_length = int(max_length or self.manifest.get("max_length") or 512)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.use_bf16 = resolve_bf16(bf16)
        self.system_prompt: str | None = self.manifest.get("system_prompt")
        self.__name__ = "category_reward"  # TRL names reward functions by __name__ in its logs
        entries = self.manifest["models"]
        if fallback == "single" and SINGLE_MODEL not in entries:
            raise ModelError(f"fallback 'single' needs a single model ('{SINGLE_MODEL}') in {self.bundle_dir}")
        tokenizer_dir = self.bundle_dir / "tokenizer"
        if not tokenizer_dir.is_dir():
            raise ModelError(f"{self.bundle_dir} is not a complete reward-model bundle: tokenizer/ is missing")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        except (OSError, ValueError) as err:
            raise ModelError(f"cannot load the tokenizer of {self.bundle_dir}: {err}") from None
        fix_special_tokens(self.tokenizer)
        self.tokenizer.padding_side = "right"
        self._models: dict[str, Any] = {}
        self._peft_model: Any = None
        self._active: str | None = None
        paths = {name: safe_join(self.bundle_dir, entry["path"]) for name, entry in entries.items()}
        for name, path in paths.items():
            marker = "adapter_config.json" if self.manifest["mode"] == "lora" else "config.json"
            if not (path / marker).is_file():
                raise ModelError(f"reward model '{name}' of {self.bundle_dir} is missing ({path / marker})")
        safe = {"use_safetensors": True} if not allow_pickle else {}
        if self.manifest["mode"] == "lora":
            from peft import PeftModel

            backbone = resolve_model(self.manifest["backbone"])
            check_weights_are_safe(backbone, allow_pickle)
            base = _quiet_load(AutoModelForSequenceClassification, backbone, num_labels=1, dtype=torch.float32,
                               **safe)
            fix_special_tokens(self.tokenizer, base)
            (first, first_path), *rest = paths.items()
            model = PeftModel.from_pretrained(base, str(first_path), adapter_name=first)
            for name, path in rest:
                model.load_adapter(str(path), adapter_name=name)
            self._peft_model = model.to(self.device).eval()
        else:
            for name, path in paths.items():
                check_weights_are_safe(str(path), allow_pickle)
                model = _quiet_load(AutoModelForSequenceClassification, str(path), dtype=torch.float32, **safe)
                fix_special_tokens(self.tokenizer, model)
                self._models[name] = model.to(self.device).eval()
        self.categories = [c for c in entries if c != SINGLE_MODEL]
        self._demo_cache: dict[tuple[str, str, str], float] = {}
        any_model = self._peft_model if self._peft_model is not None else next(iter(self._models.values()))
        self.max_length = fit_max_length(self.max_length, any_model, self.tokenizer,
                                         where=f"reward-model bundle {self.bundle_dir}")
        self.truncated_pairs = 0  # pairs longer than max_length, scored on their last max_length tokens

    @classmethod
    def load(cls, bundle_dir: str | Path, **kwargs: Any) -> CategoryRewardModels:
        return cls(bundle_dir, **kwargs)

    @property
    def model_names(self) -> list[str]:
        """Every model of the bundle: the category ids, or ``["all"]`` for a single-model bundle."""
        return list(self.manifest["models"])

    @property
    def per_category(self) -> bool:
        return bool(self.manifest.get("per_category", SINGLE_MODEL not in self.manifest["models"]))

    def route(self, category: str | None) -> list[str]:
        """The model(s) whose mean scores a pair of this category (DataError for an unknown one, by default)."""
        names = self.manifest["models"]
        if category in names:
            return [category]
        if not self.categories:  # one model for all categories
            return [SINGLE_MODEL]
        if self.fallback == "single":
            return [SINGLE_MODEL]
        if self.fallback == "mean":
            return list(self.categories)
        raise DataError(f"no reward model for category {category!r} (the bundle {self.bundle_dir} has "
                        f"{', '.join(names)}); configure a fallback ('single' or 'mean') to score it anyway",
                        field="category")

    _route = route

    def _forward(self, name: str, ids: list[list[int]]) -> list[float]:
        import torch

        model = self._models.get(name)
        if model is None:
            if name not in self.manifest["models"]:
                raise KeyError(name)
            if self._active != name:
                self._peft_model.set_adapter(name)
                self._active = name
            model = self._peft_model
        pad = self.tokenizer.pad_token_id
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        attention = torch.zeros((len(ids), width), dtype=torch.long)
        for row, seq in enumerate(ids):
            input_ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            attention[row, :len(seq)] = 1
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            logits = model(input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device),
                           use_cache=False).logits
        return logits.float().reshape(len(ids), -1)[:, 0].cpu().tolist()

    def encode(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[list[int]]:
        """Token ids of each (prompt, completion), as the reward models saw them in training (the bundle's
        ``system_prompt`` added to a prompt that has no system message).

        A pair longer than ``max_length`` keeps its last ``max_length`` tokens (the end of the response, which the
        scalar head reads); such pairs are counted in ``truncated_pairs`` and logged.
        """
        stats: dict[str, int] = {}
        # The bundle's system prompt is added to a prompt without one, exactly as training rendered its prompts.
        encoded = [encode_pair(self.tokenizer, as_messages(p, self.system_prompt), completion_text(c),
                               self.max_length, stats)
                   for p, c in zip(prompts, completions, strict=True)]
        if stats.get("truncated"):
            first = self.truncated_pairs == 0
            self.truncated_pairs += stats["truncated"]
            (logger.warning if first else logger.info)(
                "reward scoring: %d of %d pair(s) longer than max_length %d tokens were scored on their last %d "
                "tokens (%d so far)", stats["truncated"], len(encoded), self.max_length, self.max_length,
                self.truncated_pairs)
        return encoded

    def _score_encoded(self, name: str, encoded: Sequence[list[int]]) -> list[float]:
        # Length-aware batching: sorted by length, so a batch carries little padding; results in input order.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        scores = [math.nan] * len(encoded)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            for i, value in zip(batch, self._forward(name, [encoded[i] for i in batch]), strict=True):
                scores[i] = value
        return scores

    def score_with(self, name: str, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
        """Score every pair with one named model of the bundle, in input order."""
        if len(prompts) != len(completions):
            raise ValueError(f"prompts and completions differ in length: {len(prompts)}, {len(completions)}")
        if name not in self.manifest["models"]:
            raise DataError(f"no model {name!r} in the bundle {self.bundle_dir} (it has "
                            f"{', '.join(self.manifest['models'])})", field="category")
        return self._score_encoded(name, self.encode(prompts, completions)) if prompts else []

    def score(self, prompts: Sequence[Any], completions: Sequence[Any],
              categories: Sequence[str | None]) -> list[float]:
        """Score a mixed batch: each pair by its category's model; floats in input order."""
        if not (len(prompts) == len(completions) == len(categories)):
            raise ValueError(f"prompts, completions and categories differ in length: "
                             f"{len(prompts)}, {len(completions)}, {len(categories)}")
        routes = [self.route(c) for c in categories]  # fails before any forward pass on an unknown category
        encoded = self.encode(prompts, completions)
        by_model: dict[str, list[int]] = defaultdict(list)
        for i, names in enumerate(routes):
            for name in names:
                by_model[name].append(i)
        totals = [0.0] * len(prompts)
        for name, indices in by_model.items():
            values = self._score_encoded(name, [encoded[i] for i in indices])
            for i, value in zip(indices, values, strict=True):
                totals[i] += value / len(routes[i])
        return totals

    def demonstration_reward(self, prompt: Any, demonstration: str, category: str) -> float:
        """R_j(q, õ): fixed while the models are frozen, so computed once per (prompt, demonstration, category)."""
        key = (prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True), demonstration, category)
        if key not in self._demo_cache:
            self._demo_cache[key] = self.score([prompt], [demonstration], [category])[0]
        return self._demo_cache[key]

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], category: Sequence[str] | None = None,
                 **_: Any) -> list[float]:
        """TRL reward-function signature: the dataset's ``category`` column arrives as a keyword argument."""
        categories = list(category) if category is not None else [None] * len(prompts)
        return self.score(list(prompts), list(completions), categories)

    def __repr__(self) -> str:
        return (f"CategoryRewardModels({str(self.bundle_dir)!r}, mode={self.manifest['mode']!r}, "
                f"models={self.model_names}, fallback={self.fallback!r})")


def _quiet_load(cls: Any, path: str, **kwargs: Any) -> Any:
    """from_pretrained without the load report a seq-clf head over a causal-LM checkpoint triggers."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load reward model {path}: {err}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
