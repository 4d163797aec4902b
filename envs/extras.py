"""Per-step extras beyond ``(obs, action, next_obs)`` that reward providers can ask for.

A reward provider declares what else it scores in ``needs`` (e.g. ``frozenset({"frame"})``; see
:class:`rewards.base.RewardProvider`). One mechanism gathers every extra, whatever its kind:

1. :func:`wrap` wraps each env with the extra's wrapper (if it has one), so that every ``step``
   puts the value for the state after the action in ``info[name]`` (inside the env, before a
   vector env auto-resets: the value at an episode's end belongs to the real terminal state);
   extras an env produces itself (e.g. the text of a text env) need no wrapper;
2. :func:`gather` takes ``info[name]`` out of a vector env's infos and stacks it along a leading
   batch axis into :attr:`rewards.base.TransitionBatch.extras`;
3. datasets keep the same values under ``infos[name]`` (:mod:`envs.data`), so offline labelling
   hands a provider the same batch as online training.

A new kind of extra is one :func:`register` call with its name, what it holds and how to make it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from envs.errors import ConfigError
from envs.rendering import FrameInInfo


def _stack_arrays(values: Sequence[Any]) -> np.ndarray:
    return np.stack([np.asarray(v) for v in values])


@dataclass(frozen=True)
class Extra:
    """One kind of per-step extra.

    Attributes:
        name: The key in ``info``, in ``TransitionBatch.extras`` and in a dataset's ``infos``.
        description: What one value holds, with its shape (shown in errors and docs).
        wrapper: Wraps one env so that ``step`` puts the value in ``info[name]``; ``None`` when the
            env puts it there itself.
        stack: Turns the per-env values into one batch array (default: ``np.stack``).
    """

    name: str
    description: str
    wrapper: Callable[[gym.Env], gym.Env] | None = None
    stack: Callable[[Sequence[Any]], np.ndarray] = _stack_arrays


_EXTRAS: dict[str, Extra] = {}


def register(extra: Extra) -> None:
    """Make an extra available to providers' ``needs`` (replaces one of the same name)."""
    _EXTRAS[extra.name] = extra


def known() -> dict[str, Extra]:
    """The registered extras by name."""
    return dict(_EXTRAS)


def check_needs(needs: Collection[str], source: str) -> frozenset[str]:
    """The names in ``needs`` as a frozenset, refusing unknown ones.

    Args:
        needs: Extra names a provider declared.
        source: Names the provider in the error message.

    Raises:
        ConfigError: A name that is not a registered extra.
    """
    out = frozenset(str(n) for n in needs)
    unknown = sorted(out - set(_EXTRAS))
    if unknown:
        listing = "; ".join(f"{e.name}: {e.description}" for e in _EXTRAS.values())
        raise ConfigError(f"{source} needs unknown extra(s) {', '.join(unknown)}; known extras: {listing}")
    return out


def wrap(env: gym.Env, needs: Collection[str]) -> gym.Env:
    """``env`` wrapped so that each step's ``info`` holds every extra in ``needs`` (module docstring)."""
    for name in sorted(check_needs(needs, "the reward provider")):
        wrapper = _EXTRAS[name].wrapper
        if wrapper is not None:
            env = wrapper(env)
    return env


def gather(infos: Sequence[dict[str, Any]], needs: Collection[str]) -> dict[str, np.ndarray]:
    """``{name: (batch, ...)}`` for every extra in ``needs``, taken out of a vector env's ``infos``.

    Raises:
        ConfigError: An env did not put an extra the provider needs in its ``info``.
    """
    out: dict[str, np.ndarray] = {}
    for name in needs:
        try:
            values = [info.pop(name) for info in infos]
        except KeyError:
            raise ConfigError(
                f"the reward provider needs {name!r} ({_EXTRAS[name].description}), but the env's info has none; "
                "this env does not produce it"
            ) from None
        out[name] = _EXTRAS[name].stack(values)
    return out


def single(info: Mapping[str, Any], needs: Collection[str]) -> dict[str, np.ndarray]:
    """The extras of one env's step as a batch of one (videos and other single-env rollouts)."""
    return gather([dict(info)], needs)


register(Extra("frame", "(batch, height, width, 3) uint8 frame rendered after the step", FrameInInfo))
register(
    Extra(
        "prompt",
        "(batch,) str: the prompt of a text env's episode (the env puts it in info itself)",
        stack=lambda values: np.array([str(v) for v in values], dtype=object),
    )
)
