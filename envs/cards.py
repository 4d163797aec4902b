"""One home per env: an :class:`EnvCard` holds everything the repository knows about one env id.

A card sits next to its family's make function (:mod:`envs.classic`, :mod:`envs.mujoco`,
:mod:`envs.minigrid`, :mod:`envs.jobshop.env`); :mod:`envs` registers every card with Gymnasium's
lazy string registry. Found by the env's id, a card gives:

* ``describe(env)``: the Text2Reward-style Pythonic layout of the observation and action arrays
  that LLM prompts show (:func:`rewards.code.prompts.describe_env`); ``None`` when the env's
  observation does not have that layout (a kwarg that changes the observation);
* ``reward_fn(obs, action, next_obs, **env_kwargs) -> (batch,) float32``: the env's own (true)
  reward in closed form, on torch tensors, where the observation determines it (EPIC and other
  comparisons evaluate it on transitions that never happened; planners differentiate through it);
* ``termination_fn(obs, action, next_obs, **env_kwargs) -> (batch,) bool``: whether the env
  terminates after the transition (never truncation), as mbrl-lib's ``termination_fns``;
* ``policies``: scripted batched controllers by name (``policy=scripted:<name>`` in
  ``experiments/collect.py``), ``(batch, *obs_shape)`` -> ``(batch, *action_shape)``;
* ``features``: what the env provides that some agents require (e.g. ``"action_masks"``).

Keyword arguments of ``reward_fn`` / ``termination_fn`` named like the env's own
``gymnasium.make`` kwargs receive their values (:func:`bound_fn`); :func:`closed_forms` does that
for an env config. torch is imported only when these functions run, not with :mod:`envs`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from envs.errors import ConfigError

if TYPE_CHECKING:
    from torch import Tensor

NAMESPACE = "rewardlab"

TensorFn = Callable[..., "Tensor"]
"""``(obs (batch, *obs_shape), action (batch, *action_shape), next_obs (batch, *obs_shape), **env_kwargs) -> (batch,)``."""
BoundFn = Callable[["Tensor", "Tensor", "Tensor"], "Tensor"]
Policy = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EnvCard:
    """Everything rewardlab knows about one env, found by its id (module docstring).

    Attributes:
        base_id: Id without the namespace, e.g. ``"CartPole-v1"``.
        entry_point: Lazy Gymnasium entry point, ``"package.module:function"``.
        kwargs: Registration kwargs passed to the entry point (e.g. ``{"base_id": ...}``).
        describe: ``env -> text`` for LLM prompts, ``None`` when the layout does not fit the env.
        reward_fn: The true reward in closed form on tensors (``(batch,)`` float32), or ``None``.
        termination_fn: Termination after ``(obs, action, next_obs)`` (``(batch,)`` bool), or
            ``None`` when unknown.
        policies: Scripted batched policies by name.
        features: What the env provides that some agents require (``"action_masks"``, ...).
        action_mask: ``(batch, *obs_shape)`` observations -> ``(batch, n_actions)`` bool: the actions the
            env allows, when the observation determines them (an env with ``action_masks``): agents that
            mask while training mask the same way wherever they act (evaluation, videos, collection).
        disable_env_checker: The entry point calls ``gymnasium.make`` itself, whose checker
            already wraps the env; ``False`` for envs the entry point constructs directly.
    """

    base_id: str
    entry_point: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    describe: Callable[[gym.Env], str | None] | None = None
    reward_fn: TensorFn | None = None
    termination_fn: TensorFn | None = None
    policies: Mapping[str, Policy] = field(default_factory=dict)
    features: frozenset[str] = frozenset()
    action_mask: Callable[[np.ndarray], np.ndarray] | None = None
    disable_env_checker: bool = True

    @property
    def id(self) -> str:
        """The registered id, ``"rewardlab/<base_id>"``."""
        return f"{NAMESPACE}/{self.base_id}"


_CARDS: dict[str, EnvCard] = {}


def register(card: EnvCard) -> None:
    """Register ``card.id`` with Gymnasium (lazy string entry point) and keep the card."""
    if card.id not in gym.registry:
        gym.register(
            id=card.id,
            entry_point=card.entry_point,
            kwargs=dict(card.kwargs),
            disable_env_checker=card.disable_env_checker,
        )
    _CARDS[card.id] = card


def card(env_id: str) -> EnvCard:
    """The card of a registered id (``"rewardlab/CartPole-v1"``).

    Raises:
        ConfigError: No card has this id.
    """
    try:
        return _CARDS[env_id]
    except KeyError:
        raise ConfigError(f"no env card for {env_id!r}; rewardlab's env ids: {', '.join(sorted(_CARDS))}") from None


def cards() -> list[EnvCard]:
    """Every registered card, sorted by id."""
    return [_CARDS[k] for k in sorted(_CARDS)]


def bound_fn(fn: TensorFn, env_kwargs: Mapping[str, Any]) -> BoundFn:
    """``fn`` with the env kwargs it names filled in: ``(obs, action, next_obs) -> (batch,)``.

    Args:
        fn: A card's ``reward_fn`` or ``termination_fn``.
        env_kwargs: The env's ``gymnasium.make`` kwargs (:func:`envs.make.make_kwargs`); only
            those that ``fn`` takes as named parameters are passed.
    """
    names = [
        p.name
        for p in list(inspect.signature(fn).parameters.values())[3:]
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    kwargs = {k: env_kwargs[k] for k in names if k in env_kwargs}

    def bound(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
        return fn(obs, action, next_obs, **kwargs)

    bound.__name__ = getattr(fn, "__name__", "bound")
    bound.__qualname__ = getattr(fn, "__qualname__", bound.__name__)
    bound.__module__ = getattr(fn, "__module__", __name__)
    bound.__doc__ = getattr(fn, "__doc__", None)
    return bound


def numpy_fn(fn: Callable[..., Tensor]) -> Callable[..., np.ndarray]:
    """A tensor function as one on numpy arrays, for EPIC and other numpy callers.

    Float inputs are computed in float64 (integer actions keep their dtype); the result comes
    back as float32, or bool for a termination function. Keyword arguments are passed through.

    Args:
        fn: ``(obs, action, next_obs, **kwargs) -> (batch,)`` on tensors (a card's function, or
            one from :func:`bound_fn`).
    """

    def on_arrays(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, **kwargs: Any) -> np.ndarray:
        import torch

        def tensor(x: np.ndarray) -> Tensor:
            x = np.asarray(x)
            if x.dtype.kind == "f":
                x = x.astype(np.float64, copy=False)
            return torch.from_numpy(np.ascontiguousarray(x))

        with torch.no_grad():
            out = fn(tensor(obs), tensor(action), tensor(next_obs), **kwargs).detach().cpu().numpy()
        return out if out.dtype == np.bool_ else out.astype(np.float32, copy=False)

    on_arrays.__name__ = getattr(fn, "__name__", "on_arrays")
    on_arrays.__doc__ = getattr(fn, "__doc__", None)
    return on_arrays


def closed_forms(env_cfg: Mapping[str, Any]) -> tuple[BoundFn | None, BoundFn | None]:
    """The true reward and termination of an env config, bound to its kwargs (``None`` if unknown).

    Args:
        env_cfg: Env config mapping (``experiments/conf/env/<name>.yaml``; see :mod:`envs.make`).

    Returns:
        ``(reward, termination)``: tensor functions ``(obs, action, next_obs) -> (batch,)``.

    Raises:
        ConfigError: The config's id has no card.
    """
    from envs.make import make_kwargs  # stable-baselines3 comes with it: not at import time

    c = card(str(env_cfg.get("id")))
    kwargs = make_kwargs(env_cfg)
    reward = None if c.reward_fn is None else bound_fn(c.reward_fn, kwargs)
    termination = None if c.termination_fn is None else bound_fn(c.termination_fn, kwargs)
    return reward, termination


def never_terminates(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """The ``termination_fn`` of an env that only ends by truncation: ``(batch,)`` all False."""
    import torch

    return torch.zeros(len(next_obs), dtype=torch.bool, device=next_obs.device)


def describe_space(space: gym.Space, name: str) -> str:
    """One line giving a space as a batched array: ``"obs: float array (B, 3) in [-1, 1]"``."""
    if isinstance(space, gym.spaces.Discrete):
        return f"{name}: (B,) integers in [{space.start}, {space.start + space.n})"
    if isinstance(space, gym.spaces.Box):
        low, high = np.unique(space.low), np.unique(space.high)
        bounds = f"in [{low[0]:g}, {high[0]:g}]" if len(low) == 1 and len(high) == 1 else "with per-dimension bounds"
        return f"{name}: float array (B, {', '.join(map(str, space.shape))}) {bounds}"
    return f"{name}: {space}"


def vector_layout(size: int, obs_text: str, action_text: str, notes: str) -> Callable[[gym.Env], str | None]:
    """A card's ``describe`` for a flat observation of ``size`` floats, named index by index.

    Args:
        size: Observation length with the env's default kwargs; any other shape gets ``None``.
        obs_text: One line per index or slice, ``"obs[:, 0]  cart position x (m)"``.
        action_text: The same for the action.
        notes: What else a reward needs (episode end, time step, ...).
    """

    def describe(env: gym.Env) -> str | None:
        if tuple(env.observation_space.shape or ()) != (size,):
            return None
        return (
            f"{notes}\nobs: float array (B, {size}):\n{_indent(obs_text)}\n"
            f"{describe_space(env.action_space, 'action')}:\n{_indent(action_text)}"
        )

    return describe


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
