"""Implicit Q-Learning (Kostrikov, Nair & Levine, 2021), continuous and discrete actions.

IQL never queries the critic on actions outside the dataset. Per gradient step, on a minibatch
``(s, a, r, s', d)``:

1. value, by expectile regression towards the (target) twin-Q minimum, ``L_V = E[|tau - 1(u < 0)| u^2]``
   with ``u = min_i Q'_i(s, a) - V(s)``; ``tau = 0.7`` makes ``V`` an upper expectile of in-data actions;
2. critics, by TD towards ``r + gamma (1 - d) V(s')`` (``d``: termination only, truncation bootstraps),
   and a Polyak update of the target critics;
3. policy, by advantage-weighted regression: ``L_pi = E[min(exp(beta (Q'(s,a) - V(s))), 100) * -log pi(a|s)]``
   with ``beta = 3`` and a cosine-annealed actor learning rate.

Defaults are the paper's MuJoCo settings as in CORL's ``iql.py`` (two hidden layers of 256, Adam
3e-4, batch 256, rewards scaled by ``1000 / (max episode return - min episode return)``, states
standardised). Discrete actions use critics with one output per action and a softmax policy.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.nn import functional as F
from typing_extensions import override

from agents.offline.base import Batch, OfflineAgent, adam
from agents.offline.nets import TwinQ, make_policy, mlp
from envs.data import Episodes
from envs.errors import ConfigError

EXP_ADV_MAX = 100.0


def expectile_loss(u: torch.Tensor, tau: float) -> torch.Tensor:
    """``mean(|tau - 1(u < 0)| * u^2)``: the asymmetric L2 loss whose minimiser is the tau-expectile."""
    weight = torch.abs(tau - (u < 0).to(u.dtype))
    return (weight * u.pow(2)).mean()


class IQL(OfflineAgent[Batch]):
    """``agent=iql`` (module docstring; the shared arguments are :class:`~agents.offline.base.OfflineAgent`'s).

    Args:
        expectile: tau of the value's expectile regression (0.5: mean, -> 1: max).
        beta: Inverse temperature of advantage-weighted policy extraction.
        gamma: Discount.
        polyak: Target critic update rate.
        learning_rate: Adam step size of value and critics.
        actor_learning_rate: Adam step size of the policy (cosine-annealed to 0 over ``max_steps``).
        max_steps: Length of the cosine schedule (the run's ``steps``).
        reward_scale: ``auto`` (1000 / range of episode returns, the paper's locomotion setting) or a number.
        actor_dropout: Dropout in the policy network (null: none; the paper uses 0.1 on some tasks).
    """

    name = "iql"

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        seed: int = 0,
        device: str = "cpu",
        expectile: float = 0.7,
        beta: float = 3.0,
        gamma: float = 0.99,
        polyak: float = 0.005,
        learning_rate: float = 3e-4,
        actor_learning_rate: float = 3e-4,
        max_steps: int = 1_000_000,
        reward_scale: str | float = "auto",
        actor_dropout: float | None = None,
        **shared: Any,
    ) -> None:
        if not 0.0 < float(expectile) < 1.0:
            raise ConfigError(f"agent.expectile={expectile!r} must be in (0, 1)")
        if reward_scale != "auto" and not isinstance(reward_scale, (int, float)):
            raise ConfigError(f"agent.reward_scale={reward_scale!r} must be auto or a number")
        self.reward_scale_cfg = reward_scale
        self.reward_scale = 1.0
        super().__init__(observation_space, action_space, seed, device, **shared)
        self.expectile, self.beta, self.gamma, self.polyak = float(expectile), float(beta), float(gamma), float(polyak)
        hidden: Sequence[int] = self.hidden
        with self.seeded_init():
            self.critic = TwinQ(self.obs_dim, self.action_space, hidden).to(self.device)
            self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
            self.value = mlp(self.obs_dim, hidden, 1).to(self.device)
            self.actor = make_policy(self.obs_dim, self.action_space, hidden, actor_dropout).to(self.device)
        self.modules = {
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "value": self.value,
        }
        self.optimizers = {
            "actor": adam(self.actor.parameters(), actor_learning_rate),
            "critic": adam(self.critic.parameters(), learning_rate),
            "value": adam(self.value.parameters(), learning_rate),
        }
        self.schedulers = {
            "actor": torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizers["actor"], max(1, int(max_steps)))
        }

    @override
    def scale_rewards(self, data: Episodes, rewards: np.ndarray) -> np.ndarray:
        if self.reward_scale_cfg == "auto":
            returns = data.episode_returns(rewards)
            spread = float(returns.max() - returns.min()) if len(returns) > 1 else 0.0
            scale = 1000.0 / spread if spread > 1e-6 else 1.0
        else:
            scale = float(self.reward_scale_cfg)
        self.reward_scale = scale
        return (rewards * scale).astype(np.float32)

    @override
    def update(self, batch: Batch) -> Mapping[str, torch.Tensor]:
        with torch.no_grad():
            target_q = self.critic_target(batch.obs, batch.actions).min(0).values
            next_v = self.value(batch.next_obs).squeeze(-1)
            td_target = batch.rewards + self.gamma * batch.not_done * next_v

        v = self.value(batch.obs).squeeze(-1)
        adv = target_q - v
        loss_v = expectile_loss(adv, self.expectile)
        self._step_optimizer("value", loss_v)

        q = self.critic(batch.obs, batch.actions)
        loss_q = F.mse_loss(q, td_target.unsqueeze(0).expand_as(q))
        self._step_optimizer("critic", loss_q)
        with torch.no_grad():
            torch._foreach_lerp_(list(self.critic_target.parameters()), list(self.critic.parameters()), self.polyak)

        weight = torch.exp(self.beta * adv.detach()).clamp(max=EXP_ADV_MAX)
        loss_pi = (weight * -self.actor.log_prob(batch.obs, batch.actions)).mean()
        self._step_optimizer("actor", loss_pi)
        self.schedulers["actor"].step()
        return {
            "loss_value": loss_v.detach(),
            "loss_critic": loss_q.detach(),
            "loss_actor": loss_pi.detach(),
            "adv_weight": weight.mean(),
        }

    def _step_optimizer(self, name: str, loss: torch.Tensor) -> None:
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @override
    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "reward_scale": self.reward_scale}
