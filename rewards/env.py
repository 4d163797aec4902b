"""``reward=env``: the environment's own reward (ground truth; proxy and true coincide)."""

from __future__ import annotations

import numpy as np

from rewards.base import RewardProvider, TransitionBatch


class EnvReward(RewardProvider):
    """Returns the env's reward unchanged."""

    def reward(self, batch: TransitionBatch) -> np.ndarray:
        return np.asarray(batch.env_reward, dtype=np.float32)
