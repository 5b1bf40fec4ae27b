"""Negatives for inverse RL: samples of a policy for the same prompts, generated in batches and cached on disk.

The cache file is chosen by the policy's identity (its resolved path and weight files' sizes and times), the
generation settings and the system prompt, so changing any of them regenerates; inside the file a prompt's samples
are found by its example id *and* a hash of its prompt text, so an edited prompt, or another file that reuses an id,
never gets the samples of a different prompt.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from drirl.distributed import generate_sharded, on_main
from drirl.generation import GenerationSettings
from drirl.io import read_jsonl, sha256_json, write_jsonl
from drirl.models import cache_dir, resolve_model

logger = logging.getLogger(__name__)


def policy_fingerprint(reference: str) -> dict[str, Any]:
    resolved = resolve_model(reference)
    path = Path(resolved)
    files: list[Any] = []
    if path.is_dir():
        for weight in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
            stat = weight.stat()
            files.append([weight.name, stat.st_size, int(stat.st_mtime)])
    return {"model": resolved, "files": files}


def negatives_cache_path(reference: str, settings: GenerationSettings, root: str | os.PathLike | None = None,
                         system_prompt: str | None = None) -> Path:
    key = sha256_json({"policy": policy_fingerprint(reference), "settings": settings.key(),
                       "system_prompt": system_prompt})[:20]
    return Path(root or cache_dir() / "negatives") / f"{key}.jsonl"


def prompt_key(example: Any) -> str:
    """The cache key of one example's samples: its id and a hash of its prompt (text or chat messages)."""
    return f"{example.id}#{sha256_json(example.prompt)[:16]}"


def sample_negatives(reference: str, examples: Sequence[Any], settings: GenerationSettings, *,
                     cache_root: str | os.PathLike | None = None, model: Any = None, tokenizer: Any = None,
                     system_prompt: str | None = None, chunk_batches: int = 8) -> dict[str, list[str]]:
    """``settings.num_return_sequences`` samples of the policy per example, keyed by example id (cached by id and
    prompt text, see :func:`prompt_key`).

    The cache file is rewritten after every ``chunk_batches`` generate() batches, so an interrupted run keeps what
    it sampled; a later call samples only the prompts still missing.
    """
    path = negatives_cache_path(reference, settings, cache_root, system_prompt)
    cached: dict[str, list[str]] = {}
    if path.is_file():
        for row in read_jsonl(path, skip_invalid=True):
            samples = row.get("samples")
            # Rows without a "key" (written before prompts were part of it) are not trusted: sampled again.
            if isinstance(row.get("key"), str) and isinstance(samples, list) \
                    and len(samples) == settings.num_return_sequences and all(isinstance(x, str) for x in samples):
                cached[row["key"]] = samples
    missing = list({prompt_key(e): e for e in examples if prompt_key(e) not in cached}.values())
    if not missing:
        logger.info("negatives for %d prompts reused from %s", len(examples), path)
        return {e.id: cached[prompt_key(e)] for e in examples}
    logger.info("sampling %d negative(s) for each of %d prompts from %s (cache %s)", settings.num_return_sequences,
                len(missing), reference, path)
    if model is None:
        from drirl.models import load_policy
        from drirl.trainer_setup import has_cuda

        model, tokenizer = load_policy(reference)
        if has_cuda():
            model.to("cuda")
    chunk = max(1, settings.batch_size * max(1, chunk_batches))
    for start in range(0, len(missing), chunk):
        part = missing[start:start + chunk]
        # A distinct seed per chunk, so chunks do not repeat each other's random streams.
        part_settings = dataclasses.replace(settings, seed=settings.seed + start)
        samples = _generate(model, tokenizer, [e.prompt for e in part], part_settings, system_prompt)
        for example, generated in zip(part, samples, strict=True):
            cached[prompt_key(example)] = generated
        on_main(write_jsonl, path,
                [{"key": k, "id": k.rsplit("#", 1)[0], "samples": v} for k, v in sorted(cached.items())])
    return {e.id: cached[prompt_key(e)] for e in examples}


def _generate(model: Any, tokenizer: Any, prompts: list[Any], settings: GenerationSettings,
              system_prompt: str | None) -> list[list[str]]:
    # generate() itself runs under bf16 autocast where the CPU has native bf16. Under several processes each
    # generates its share of the batches, with the seeds of a one-process run.
    return generate_sharded(model, tokenizer, prompts, settings, system_prompt=system_prompt,
                    description="sampling negatives")
