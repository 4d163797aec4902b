"""``reward=env``: the environment's own reward (ground truth; proxy and true coincide)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from typing_extensions import override

from envs.errors import ConfigError
from rewards.base import RewardProvider, TorchRewardFn, TransitionBatch, config_needs


class EnvReward(RewardProvider):
    """Returns the env's reward unchanged.

    Args:
        env: The run's env config (``${env}``). Where the env's card has the reward in closed form
            (:mod:`envs.cards`), :meth:`torch_reward` returns it, bound to the config's kwargs, so
            planners can roll it out through a model; without ``env`` there is no torch path.
    """

    def __init__(self, env: Mapping[str, Any] | None = None) -> None:
        self._torch: TorchRewardFn | None = None
        if env is not None:
            from envs.cards import closed_forms

            try:
                self._torch = closed_forms(env)[0]
            except ConfigError:  # an env rewardlab has no card for: no closed form
                self._torch = None

    @override
    def reward(self, batch: TransitionBatch) -> np.ndarray:
        return np.asarray(batch.env_reward, dtype=np.float32)

    def torch_reward(self) -> TorchRewardFn | None:
        """The env's closed-form reward on tensors, where its card has one (``None`` otherwise)."""
        return self._torch


def check_imagined(provider: RewardProvider, who: str) -> None:
    """Refuse a provider that cannot score transitions a learned model imagines (planners, model rollouts).

    Such transitions have observations and actions only: no rendered frames, and no env reward
    unless the env's card gives it in closed form.

    Args:
        provider: The run's reward provider.
        who: How the refusal names the agent (e.g. ``agent=pets``).

    Raises:
        ConfigError: The provider scores extras (frames) a dynamics model cannot produce, or it is the
            env's own reward and the env has no closed form of it.
    """
    if provider.needs:
        raise ConfigError(_imagined_message(who, type(provider).__name__, provider.needs))
    if isinstance(provider, EnvReward) and provider.torch_reward() is None:
        raise ConfigError(
            f"{who} needs the reward in closed form to plan, and this env's card has no reward_fn "
            "(its reward is not a function of the observations); give a reward=fn or reward=code written on observations"
        )


def _imagined_message(who: str, what: str, needs: frozenset[str]) -> str:
    extras = "rendered frames" if needs == {"frame"} else ", ".join(sorted(needs))
    return (
        f"{who} plans through a learned model of the observations, and {what} scores {extras}, which the model "
        "cannot produce; use a reward on observations (reward=env, fn, code, or preference with an MLP reward model)"
    )


def check_imagined_config(reward_cfg: Mapping[str, Any], who: str) -> None:
    """:func:`check_imagined` on a ``reward`` config node, before its provider is built (a CLIP model loaded).

    Raises:
        ConfigError: The provider would score extras (frames) that a dynamics model cannot produce.
    """
    needs = config_needs(reward_cfg)
    if needs:
        raise ConfigError(_imagined_message(who, f"reward={reward_cfg.get('name', '?')}", needs))
