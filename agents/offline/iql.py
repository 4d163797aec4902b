"""Implicit Q-Learning (Kostrikov, Nair & Levine, 2021), continuous and discrete actions.

IQL never queries the critic on actions outside the dataset. Per gradient step, on a minibatch
``(s, a, r, s', d)``:

1. value, by expectile regression towards the (target) twin-Q minimum, ``L_V = E[|tau - 1(u < 0)| u^2]``
   with ``u = min_i Q'_i(s, a) - V(s)``; ``tau = 0.7`` makes ``V`` an upper expectile of in-data actions;
2. critics, by TD towards ``r + gamma (1 - d) V(s')`` (``d``: termination only, truncation bootstraps),
   and a Polyak update of the target critics;
3. policy, by advantage-weighted regression: ``L_pi = E[min(exp(beta (Q'(s,a) - V(s))), 100) * -log pi(a|s)]``
   with ``beta = 3`` and a cosine-annealed actor learning rate,
   ``lr_t = lr / 2 * (1 + cos(pi * min(t, T) / T))`` at step ``t`` of ``T`` (the run's ``steps``; after a
   resume with a larger budget, the new one: :mod:`agents.offline.base`).

Rewards are transformed per kind of reward, as the paper's code and CORL's ``modify_reward`` do per
D4RL task family (``reward_scale``):

* ``locomotion``: ``r * 1000 / (max R - min R)``, ``R`` the returns of the dataset's *complete* episodes
  (:func:`~agents.offline.base.complete_episodes`; a piece cut short by a collection budget has no
  return). The paper's choice for MuJoCo locomotion (CORL: ``max_episode_steps / (max R - min R)``,
  also 1000 there): advantages, and so the weights ``exp(beta A)``, no longer depend on the reward's units.
* ``antmaze``: ``r - 1``, the paper's choice for AntMaze's sparse 0/1 goal reward (-1 per step until the goal).
* ``none``: the labels as they are, the paper's Kitchen and Adroit.
* a number ``c``: ``c * r``.
* ``auto`` (default): ``antmaze`` when the labels are a sparse goal reward (at least half the transitions
  exactly 0, none negative, some positive; e.g. MiniGrid's success reward), else ``locomotion`` (dense
  rewards: classic control, MuJoCo, learned and zero-shot proxies). The kind is read from the labels the
  run trains on, not from the env, because the run's reward provider decides it (a MiniGrid dataset
  labelled by a learned reward model is dense).

Other defaults are the paper's MuJoCo settings as in CORL's ``iql.py`` (two hidden layers of 256,
Adam 3e-4, batch 256, states standardised). Discrete actions use critics with one output per action
and a softmax policy.
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch.nn import functional as F
from typing_extensions import override

from agents.offline.base import Batch, OfflineAgent, adam, complete_episodes, set_lr
from agents.offline.nets import TwinQ, make_policy, mlp
from envs.data import Episodes
from envs.errors import ConfigError

EXP_ADV_MAX = 100.0
REWARD_RULES = ("auto", "locomotion", "antmaze", "none")
log = logging.getLogger("rewardlab")


def expectile_loss(u: torch.Tensor, tau: float) -> torch.Tensor:
    """``mean(|tau - 1(u < 0)| * u^2)``: the asymmetric L2 loss whose minimiser is the tau-expectile."""
    weight = torch.abs(tau - (u < 0).to(u.dtype))
    return (weight * u.pow(2)).mean()


def cosine_lr(lr: float, step: int, length: int) -> float:
    """The learning rate of ``CosineAnnealingLR(T_max=length)`` at ``step``, held at 0 past the end."""
    length = max(1, int(length))
    return 0.5 * lr * (1.0 + math.cos(math.pi * min(step, length) / length))


def is_sparse_goal(rewards: np.ndarray) -> bool:
    """Whether ``(steps,)`` rewards look like a sparse goal reward: mostly exactly 0, none negative, some positive."""
    return bool(len(rewards) and (rewards == 0).mean() >= 0.5 and rewards.min() >= 0 and rewards.max() > 0)


class IQL(OfflineAgent[Batch]):
    """``agent=iql`` (module docstring; the shared arguments are :class:`~agents.offline.base.OfflineAgent`'s).

    Args:
        expectile: tau of the value's expectile regression (0.5: mean, -> 1: max).
        beta: Inverse temperature of advantage-weighted policy extraction.
        gamma: Discount.
        polyak: Target critic update rate.
        learning_rate: Adam step size of value and critics.
        actor_learning_rate: Adam step size of the policy (cosine-annealed to 0 over ``max_steps``).
        max_steps: Length of the cosine schedule; ``None``: the budget given to ``train`` (the run's ``steps``).
        reward_scale: ``auto``, ``locomotion``, ``antmaze``, ``none`` or a number (module docstring).
        actor_dropout: Dropout in the policy network (null: none; the paper uses 0.1 on some tasks).

    Raises:
        ConfigError: An expectile outside (0, 1) or an unknown ``reward_scale``.
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
        max_steps: int | None = None,
        reward_scale: str | float = "auto",
        actor_dropout: float | None = None,
        **shared: Any,
    ) -> None:
        if not 0.0 < float(expectile) < 1.0:
            raise ConfigError(f"agent.expectile={expectile!r} must be in (0, 1)")
        if isinstance(reward_scale, bool) or not (
            reward_scale in REWARD_RULES or isinstance(reward_scale, (int, float))
        ):
            raise ConfigError(f"agent.reward_scale={reward_scale!r} must be one of {', '.join(REWARD_RULES)} or a number")
        self.reward_rule = reward_scale
        self.reward_scale, self.reward_shift = 1.0, 0.0
        self.reward_info: dict[str, Any] = {}
        super().__init__(observation_space, action_space, seed, device, **shared)
        self.expectile, self.beta, self.gamma, self.polyak = float(expectile), float(beta), float(gamma), float(polyak)
        self.actor_lr = float(actor_learning_rate)
        self.max_steps = None if max_steps is None else int(max_steps)
        hidden: Sequence[int] = self.hidden
        with self.seeded_init():
            self.critic = TwinQ(self.obs_dim, self.action_space, hidden).to(self.device)
            self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
            self.value = mlp(self.obs_dim, hidden, 1).to(self.device)
            self.actor = make_policy(
                self.obs_dim, self.action_space, hidden, actor_dropout, generator=self.generator
            ).to(self.device)
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

    @override
    def scale_rewards(self, data: Episodes, rewards: np.ndarray) -> np.ndarray:
        """Rewards transformed by ``reward_scale`` (module docstring), float32 ``(steps,)``.

        Raises:
            ConfigError: ``locomotion`` scaling of data with no complete episode.
        """
        rule = self.reward_rule
        if rule == "auto":
            rule = "antmaze" if is_sparse_goal(rewards) else "locomotion"
        scale, shift = 1.0, 0.0
        info: dict[str, Any] = {"rule": rule if isinstance(rule, str) else "constant"}
        if rule == "locomotion":
            complete = complete_episodes(data)
            if not complete.any():
                raise ConfigError(
                    f"agent=iql: dataset {data.dataset_id!r} has no complete episode (every one was cut short), so "
                    "reward_scale=locomotion (1000 / return range) is undefined; give agent.reward_scale=<number> or none"
                )
            returns = data.episode_returns(rewards)[complete]
            spread = float(returns.max() - returns.min())
            info.update(episodes=int(complete.sum()), cut_short=int((~complete).sum()), return_range=spread)
            if spread > 1e-6:
                scale = 1000.0 / spread
            else:
                log.warning("agent=iql: every complete episode has the same return (%g); rewards left unscaled", returns[0])
        elif rule == "antmaze":
            shift = -1.0
        elif rule != "none":
            scale = float(rule)
        self.reward_scale, self.reward_shift = scale, shift
        self.reward_info = {**info, "scale": scale, "shift": shift}
        return (rewards * scale + shift).astype(np.float32)

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
        lr = cosine_lr(self.actor_lr, self.num_steps, self.max_steps or self.budget)
        set_lr(self.optimizers["actor"], lr)
        self._step_optimizer("actor", loss_pi)
        return {
            "loss_value": loss_v.detach(),
            "loss_critic": loss_q.detach(),
            "loss_actor": loss_pi.detach(),
            "adv_weight": weight.mean(),
            "lr_actor": torch.tensor(lr),
        }

    def _step_optimizer(self, name: str, loss: torch.Tensor) -> None:
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @override
    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "reward_scale": self.reward_scale, "reward_scaling": self.reward_info}
