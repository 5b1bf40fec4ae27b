"""Settings shared by every TRL trainer drirl drives (reward models, SFT/DPO baselines, GRPO-S).

TRL's defaults target GPUs and long runs (lr 1e-6, 512 new tokens, gradient checkpointing); the helpers here pick
the device-dependent ones so that the same config runs on a laptop CPU and on a GPU cluster.
"""

from __future__ import annotations

import functools
import logging
import math
import random
from dataclasses import dataclass, field
from typing import Any

from drirl.errors import ConfigError

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@functools.lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matmuls (AVX512-BF16/AMX), where bf16 autocast is about 2x faster."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve_bf16(setting: bool | str | None) -> bool:
    """``"auto"`` (or None): bf16 on a GPU that supports it, or on a CPU with native bf16; else fp32."""
    if isinstance(setting, bool):
        return setting
    if isinstance(setting, str) and setting.lower() in ("true", "false", "1", "0", "yes", "no"):
        return setting.lower() in ("true", "1", "yes")
    if setting not in (None, "auto"):
        raise ValueError(f"bf16 must be true, false or 'auto', got {setting!r}")
    import torch

    if has_cuda():
        return torch.cuda.is_bf16_supported()
    return cpu_supports_bf16()


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# The loggers transformers knows by name that drirl documents; each but "none" needs its own package installed.
REPORT_TO = {"none": None, "tensorboard": ("tensorboard", "pip install 'drirl[tensorboard]'"),
             "wandb": ("wandb", "pip install wandb"), "mlflow": ("mlflow", "pip install mlflow")}


def report_to_field() -> Any:
    """The ``report_to`` field of every training config (reward models, SFT/DPO, GRPO-S): one default, one help."""
    from drirl.config import help_field

    return field(default="none", metadata=help_field(
        f"Where the trainer logs besides the terminal: {', '.join(REPORT_TO)} (transformers' report_to; each but "
        "none needs its package installed)."))


def check_report_to(value: str | list[str], *, installed: bool = False) -> None:
    """ConfigError (key ``report_to``) for an unknown logger, and with ``installed`` for one whose package is
    missing. The name is checked when a config is built (a typo fails before any training instead of as a traceback
    from inside transformers); the package when training starts, so a recipe still loads on a machine without it."""
    import importlib.util

    from drirl.errors import ConfigError

    for name in [value] if isinstance(value, str) else list(value):
        if name not in REPORT_TO:
            raise ConfigError(f"unknown logger {name!r}; choose {', '.join(REPORT_TO)}", key="report_to")
        needs = REPORT_TO[name]
        if installed and needs and importlib.util.find_spec(needs[0]) is None:
            raise ConfigError(f"{name} is not installed: {needs[1]}", key="report_to")


def trainer_arguments(output_dir: str, *, seed: int, learning_rate: float, bf16: bool | str | None = "auto",
                      per_device_train_batch_size: int = 8, gradient_accumulation_steps: int = 1,
                      num_train_epochs: float = 1.0, max_steps: int = -1, logging_steps: int = 5,
                      save_steps: int | None = None, report_to: str | list[str] = "none",
                      gradient_checkpointing: bool = False, **extra: Any) -> dict[str, Any]:
    """Keyword arguments common to every TRL config (RewardConfig, SFTConfig, DPOConfig, GRPOConfig)."""
    use_bf16 = resolve_bf16(bf16)
    check_report_to(report_to, installed=True)
    kwargs: dict[str, Any] = {
        "output_dir": output_dir,
        "seed": seed,
        "data_seed": seed,
        "learning_rate": learning_rate,
        "per_device_train_batch_size": per_device_train_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "num_train_epochs": num_train_epochs,
        "max_steps": max_steps,
        "logging_steps": logging_steps,
        "report_to": report_to,
        "bf16": use_bf16,
        "fp16": False,
        "use_cpu": not has_cuda(),
        "gradient_checkpointing": gradient_checkpointing,
        "save_strategy": "steps" if save_steps else "no",
        "save_steps": save_steps or 500,
        "save_only_model": False,
        "dataloader_num_workers": 0,
        "disable_tqdm": False,
    }
    kwargs.update(extra)
    return kwargs


def warn_if_warmup_only(args: Any, examples: int, what: str) -> bool:
    """Warn, naming the settings to change, when every optimizer step of a run falls inside the linear warm-up.

    transformers' warm-up starts at learning rate 0: one step with one warm-up step trains nothing, and a run that
    never leaves warm-up trains at a fraction of the rate it reports. Returns whether it warned.
    """
    import math

    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
    steps = args.max_steps if args.max_steps and args.max_steps > 0 else \
        math.ceil(examples / per_step) * math.ceil(args.num_train_epochs)
    warmup = args.get_warmup_steps(steps)
    if steps > warmup:
        return False
    logger.warning("%s: %d optimizer step(s), all inside the %d warm-up step(s): the learning rate never reaches "
                   "its set value%s. Train on more examples or epochs, or lower warmup_ratio / warmup_steps.", what,
                   steps, warmup, " and the only step runs at 0, so nothing is learned" if steps <= 1 else "")
    return True


# What one training log line shows, in this order, when the trainer logged it.
CONCISE_LOG_KEYS = (("loss", "loss"), ("reward", "reward"), ("eval_reward", "held-out reward"),
                    ("scaling/alpha/std", "α sd"), ("accuracy", "acc"), ("rewards/accuracies", "acc"),
                    ("learning_rate", "lr"), ("grad_norm", "grad"))


def concise_log_line(logs: dict[str, Any], step: int, max_steps: int) -> str | None:
    """'step 5/30 · loss 0.123 · reward 0.45 · lr 0.0002' from a trainer's log dict; None for the end-of-training
    summary, which the stage's own report states."""
    if "train_runtime" in logs:
        return None
    parts = [f"step {step}/{max_steps}" if max_steps > 0 else f"step {step}"]
    for key, label in CONCISE_LOG_KEYS:
        value = logs.get(key)
        if isinstance(value, int | float):
            parts.append(f"{label} {value:.3g}")
    return " · ".join(parts)


def use_concise_logging(trainer: Any) -> None:
    """One short line per logging step instead of the trainer's ~45-key dict (every key still reaches
    log_history.json and report_to); the whole dict again at ``--log-level DEBUG``."""
    from transformers.trainer_callback import ProgressCallback

    if logging.getLogger("drirl").getEffectiveLevel() <= logging.DEBUG:
        return

    class ConciseProgressCallback(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and self.training_bar is not None and logs:
                line = concise_log_line(logs, state.global_step, state.max_steps)
                if line:
                    self.training_bar.write(line)

    if any(isinstance(c, ProgressCallback) for c in trainer.callback_handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(ConciseProgressCallback)


def top_layers(model_reference: str, count: int | None) -> list[int] | None:
    """Indices of the last ``count`` transformer layers of a model (None: every layer)."""
    if not count:
        return None
    from transformers import AutoConfig

    from drirl.models import resolve_model

    total = AutoConfig.from_pretrained(resolve_model(model_reference)).num_hidden_layers
    return list(range(max(0, total - count), total))


# ------------------------------------------------------------------------------------------------ LoRA settings
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSettings:
    """The LoRA adapter settings, defined once: every config that trains adapters inherits these fields, so each key
    means the same, has the same default and is validated the same way when the config is loaded."""

    lora_r: int = field(default=16, metadata={"help": "LoRA rank r (>= 1)."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (the update is scaled by alpha / r)."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout, in [0, 1)."})
    lora_target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS), metadata={
        "help": "Module names that get adapters; ['all-linear'] targets every linear layer but the output head."})
    lora_top_layers: int | None = field(default=None, metadata={
        "help": "Adapters only on the top N transformer layers (None: all). Backpropagation then stops at those "
        "layers, which makes training several times cheaper on a CPU."})

    def __post_init__(self) -> None:
        self.check_lora()

    def check_lora(self, *, needs_targets: bool = True) -> None:
        """ConfigError naming the first LoRA field with a bad value; ``needs_targets``: adapters are in use."""
        if isinstance(self.lora_r, bool) or not isinstance(self.lora_r, int) or self.lora_r < 1:
            raise ConfigError(f"must be an integer >= 1, got {self.lora_r!r}", key="lora_r")
        if isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, (int, float)) \
                or not math.isfinite(self.lora_alpha) or self.lora_alpha <= 0:
            raise ConfigError(f"must be a number > 0, got {self.lora_alpha!r}", key="lora_alpha")
        if isinstance(self.lora_dropout, bool) or not isinstance(self.lora_dropout, (int, float)) \
                or not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"must be in [0, 1), got {self.lora_dropout!r}", key="lora_dropout")
        if self.lora_top_layers is not None and (isinstance(self.lora_top_layers, bool) or self.lora_top_layers < 1):
            raise ConfigError(f"must be >= 1 (or null for all layers), got {self.lora_top_layers!r}",
                              key="lora_top_layers")
        if needs_targets and not self.lora_target_modules:
            raise ConfigError("needs at least one module name when LoRA is used", key="lora_target_modules")

    def peft_lora_config(self, task_type: str, model_reference: str, **extra: Any):
        """A ``peft.LoraConfig`` with these settings for ``task_type`` (e.g. "CAUSAL_LM", "SEQ_CLS")."""
        from peft import LoraConfig

        targets: list[str] | str = list(self.lora_target_modules)
        if targets == ["all-linear"]:
            targets = "all-linear"  # peft wants this shortcut as a bare string
        return LoraConfig(task_type=task_type, r=self.lora_r, lora_alpha=self.lora_alpha,
                          lora_dropout=self.lora_dropout, target_modules=targets,
                          layers_to_transform=top_layers(model_reference, self.lora_top_layers), **extra)


@dataclass
class PolicyLoraSettings(LoraSettings):
    """:class:`LoraSettings` plus the switch of the policy trainers (SFT, DPO, GRPO-S), which may also train all
    weights."""

    use_lora: bool = field(default=True, metadata={
        "help": "Train LoRA adapters (merged into the weights when saving); false: full fine-tuning."})

    def check_lora(self, *, needs_targets: bool = True) -> None:
        if not isinstance(self.use_lora, bool):
            raise ConfigError(f"must be true or false, got {self.use_lora!r}", key="use_lora")
        super().check_lora(needs_targets=needs_targets and self.use_lora)
