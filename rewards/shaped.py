"""``reward=shaped``: an affine, potential-shaped transform of a base reward.

    proxy = scale * base(s, a, s') + offset + gamma * phi(s') - phi(s)        (phi(s') = 0 at terminal s')

The base is the env's own reward (default) or a hand-written batched function; ``phi`` a batched
potential ``phi(obs) -> (batch,)``. Potential shaping leaves optimal policies unchanged (Ng et al.,
1999) and a positive ``scale`` leaves them unchanged too, while ``scale < 0`` inverts the task:
the controlled cases of reward-design studies, and the known answers of reward distances
(EPIC is ~0 for shaped and rescaled copies, 1 for a negated one).
"""

from __future__ import annotations

import numpy as np
from typing_extensions import override

from envs.errors import ConfigError
from rewards.base import RewardProvider, TransitionBatch, check_rewards
from rewards.fn import resolve_target


class ShapedReward(RewardProvider):
    """See module docstring.

    Args:
        base: ``package.module:function`` of the base reward ``f(obs, action, next_obs)``; ``None``: the env's reward.
        scale: Multiplies the base reward.
        offset: Added to every reward.
        potential: ``package.module:function`` of ``phi(obs) -> (batch,)``, or ``None`` for no shaping.
        gamma: Discount of the shaping term (use the agent's).
    """

    def __init__(
        self,
        base: str | None = None,
        scale: float = 1.0,
        offset: float = 0.0,
        potential: str | None = None,
        gamma: float = 0.99,
    ) -> None:
        if not 0.0 <= float(gamma) <= 1.0:
            raise ConfigError(f"reward.gamma={gamma} must lie in [0, 1]")
        self.base_name = base
        self.base = resolve_target(base, "reward.base") if base else None
        self.potential = resolve_target(potential, "reward.potential") if potential else None
        self.scale, self.offset, self.gamma = float(scale), float(offset), float(gamma)

    @override
    def reward(self, batch: TransitionBatch) -> np.ndarray:
        if self.base is None:
            base = np.asarray(batch.env_reward, dtype=np.float64)
        else:
            out = self.base(batch.obs, batch.action, batch.next_obs)
            base = np.asarray(out[0] if isinstance(out, tuple) else out, dtype=np.float64)
        reward = self.scale * base + self.offset
        if self.potential is not None:
            phi = np.asarray(self.potential(batch.obs), dtype=np.float64)
            phi_next = np.asarray(self.potential(batch.next_obs), dtype=np.float64)
            phi_next = np.where(np.asarray(batch.terminated, dtype=bool), 0.0, phi_next)
            reward = reward + self.gamma * phi_next - phi
        return check_rewards(reward, len(batch), source=f"reward=shaped (base {self.base_name or 'env'})")
