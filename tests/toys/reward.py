"""A toy reward provider: CartPole's pole kept upright, ``1 - |angle| / 0.2095`` after each step.

One code file plus ``tests/toys/conf/reward/toy_upright.yaml``; it has a torch path too, so a planner
could roll it out through a model.
"""

from __future__ import annotations

import numpy as np
import torch

from rewards.base import RewardProvider, TorchRewardFn, TransitionBatch

ANGLE_LIMIT = 0.2095  # radians: CartPole terminates beyond this


class UprightReward(RewardProvider):
    """``(batch, 4)`` CartPole observations -> ``(batch,)`` uprightness of the next state in [0, 1]."""

    def reward(self, batch: TransitionBatch) -> np.ndarray:
        return (1.0 - np.abs(batch.next_obs[:, 2]) / ANGLE_LIMIT).clip(0.0, 1.0).astype(np.float32)

    def torch_reward(self) -> TorchRewardFn:
        def upright(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
            return (1.0 - next_obs[:, 2].abs() / ANGLE_LIMIT).clamp(0.0, 1.0).float()

        return upright
