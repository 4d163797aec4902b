"""``reward=fn reward.target=package.module:function``: a trusted, hand-written batched reward.

This is the "expert-written reward" baseline of reward-design studies. The function runs in the
trainer's process (it is your own code; code written by a model goes through ``reward=code`` and
its sandbox instead). Contract::

    def my_reward(obs, action, next_obs) -> rewards            # rewards: (batch,) floats
    def my_reward(obs, action, next_obs) -> (rewards, components)   # components: {name: (batch,)}

with ``obs``/``next_obs`` of shape ``(batch, *obs_shape)`` and ``action`` of shape
``(batch, *action_shape)``. With ``reward.frames=true`` the function is also given
``frames=`` of shape ``(batch, height, width, 3)`` (uint8, the frame after the action).
Examples live in :mod:`rewards.examples`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np
from typing_extensions import override

from envs.errors import ConfigError
from rewards.base import RewardProvider, TransitionBatch, check_rewards

EXAMPLE = "rewards.examples:cartpole_upright"


def resolve_target(target: str | None, what: str = "reward.target") -> Callable[..., object]:
    """Import ``"package.module:function"`` and return the callable.

    Raises:
        ConfigError: Missing, malformed, unimportable or non-callable target.
    """
    if not target:
        raise ConfigError(f"reward=fn needs {what}=package.module:function (for example {what}={EXAMPLE})")
    module_name, sep, attr = str(target).partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"{what}={target!r} must look like package.module:function (for example {EXAMPLE})")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{what}={target!r}: cannot import module {module_name!r} ({exc})") from exc
    fn = module
    for part in attr.split("."):
        if not hasattr(fn, part):
            raise ConfigError(f"{what}={target!r}: module {module_name!r} has no attribute {attr!r}")
        fn = getattr(fn, part)
    if not callable(fn):
        raise ConfigError(f"{what}={target!r} is not callable")
    return fn


class FnReward(RewardProvider):
    """Calls a user's batched reward function (see module docstring).

    Args:
        target: ``"package.module:function"``.
        frames: Pass rendered frames to the function as ``frames=``.
    """

    def __init__(self, target: str | None = None, frames: bool = False) -> None:
        self.target = target
        self.fn = resolve_target(target)
        self.needs = frozenset({"frame"}) if frames else frozenset()
        self.last_components: dict[str, np.ndarray] = {}

    @override
    def reward(self, batch: TransitionBatch) -> np.ndarray:
        kwargs = {"frames": batch.frames} if "frame" in self.needs else {}
        out = self.fn(batch.obs, batch.action, batch.next_obs, **kwargs)
        if isinstance(out, tuple):
            if len(out) != 2 or not isinstance(out[1], dict):
                raise ConfigError(f"{self.target} must return rewards or (rewards, components_dict)")
            out, components = out
            self.last_components = {k: np.asarray(v, dtype=np.float32) for k, v in components.items()}
        return check_rewards(out, len(batch), source=str(self.target))
