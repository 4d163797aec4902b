"""Behaviour cloning: maximum likelihood of the dataset's actions, the offline baseline.

The same policy network as IQL (a Gaussian with state-independent std for Box actions, a softmax
for Discrete ones) trained on ``-log pi(a|s)`` with every transition weighted equally: IQL with
``beta = 0``. Rewards are not used (they are still labelled, so ``describe`` reports them).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import torch
from typing_extensions import override

from agents.offline.base import Batch, OfflineAgent, adam
from agents.offline.nets import make_policy


class BC(OfflineAgent[Batch]):
    """``agent=bc``.

    Args:
        learning_rate: Adam step size.
        dropout: Dropout in the policy network (null: none).
    """

    name = "bc"

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        seed: int = 0,
        device: str = "cpu",
        learning_rate: float = 3e-4,
        dropout: float | None = None,
        **shared: Any,
    ) -> None:
        super().__init__(observation_space, action_space, seed, device, **shared)
        with self.seeded_init():
            self.actor = make_policy(
                self.obs_dim, self.action_space, self.hidden, dropout, generator=self.generator
            ).to(self.device)
        self.modules = {"actor": self.actor}
        self.optimizers = {"actor": adam(self.actor.parameters(), learning_rate)}

    @override
    def update(self, batch: Batch) -> Mapping[str, torch.Tensor]:
        loss = -self.actor.log_prob(batch.obs, batch.actions).mean()
        opt = self.optimizers["actor"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss_actor": loss.detach()}
