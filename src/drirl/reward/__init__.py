"""Stage 2: category reward models learned by inverse RL (METHOD.md §2.3).

* :class:`RewardTrainConfig`, :func:`train_reward_models` — fit one Bradley-Terry reward model per category on
  (demonstration, policy sample) pairs and write a bundle folder;
* :class:`CategoryRewardModels` — load a bundle and score mixed batches by each pair's category (a TRL reward
  function);
* :func:`evaluate_bundle` — held-out pairwise accuracy and decision accuracy (pairs of one form that differ only in
  the safety decision, :mod:`drirl.reward.decision`) per category and across categories;

The Best-of-N gate that checks a bundle with the SFT policy before reinforcement learning is
:func:`drirl.eval.reward_gate.best_of_n_gate` (it samples from a policy, so it sits above this layer).

The names are imported lazily, so ``import drirl.reward`` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from drirl.reward.bundle import CategoryRewardModels
    from drirl.reward.evaluate import evaluate_bundle
    from drirl.reward.irl import RewardTrainConfig, train_reward_models

__all__ = ["CategoryRewardModels", "RewardTrainConfig", "evaluate_bundle", "train_reward_models"]

_WHERE = {
    "RewardTrainConfig": "drirl.reward.irl",
    "train_reward_models": "drirl.reward.irl",
    "CategoryRewardModels": "drirl.reward.bundle",
    "evaluate_bundle": "drirl.reward.evaluate",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'drirl.reward' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
