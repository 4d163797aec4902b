"""Build single and vectorised envs from an env config (``experiments/conf/env/<name>.yaml``).

An env config is a mapping with these keys::

    name: cartpole                 # the config's name (used in run names and summaries)
    id: rewardlab/CartPole-v1      # a registered Gymnasium id
    kwargs: {}                     # passed to gymnasium.make
    max_episode_steps: null        # override the registered time limit
    render: {width: 384, height: 256}
    vec: dummy                     # dummy (one process) or subproc (one process per env)

What rewardlab knows about the env beyond its config (closed-form reward, termination, prompt
layout, scripted policies, features) is on its card, found by the id (:mod:`envs.cards`).
Any other key is passed to ``gymnasium.make`` as well, so that an env's main parameters can sit
at the top of its config and be overridden as ``env.<key>=...`` (e.g. ``env.instance=ta01``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

import gymnasium as gym
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

import envs  # registers the rewardlab ids
from envs import extras as extras_mod
from envs.errors import ConfigError

VEC_KINDS = ("dummy", "subproc")
RESERVED = {"name", "id", "kwargs", "render", "max_episode_steps", "vec"}


def make_kwargs(env_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments ``gymnasium.make`` gets for an env config (module docstring)."""
    kwargs = dict(env_cfg.get("kwargs") or {})
    kwargs.update({k: v for k, v in env_cfg.items() if k not in RESERVED})
    render = env_cfg.get("render") or {}
    if render.get("width") is not None:
        kwargs["render_width"] = int(render["width"])
    if render.get("height") is not None:
        kwargs["render_height"] = int(render["height"])
    if env_cfg.get("max_episode_steps") is not None:
        kwargs["max_episode_steps"] = int(env_cfg["max_episode_steps"])
    return kwargs


def make_env(env_cfg: Mapping[str, Any], extras: Collection[str] = ()) -> gym.Env:
    """Make one env (``render_mode="rgb_array"``) from an env config.

    Args:
        env_cfg: Env config mapping (see module docstring).
        extras: Per-step extras to put in ``info`` (:mod:`envs.extras`, e.g. ``{"frame"}``).

    Raises:
        ConfigError: Unknown id or kwargs the env does not accept.
    """
    env_id = env_cfg.get("id")
    if env_id not in gym.registry:
        known = ", ".join(envs.registered_ids())
        raise ConfigError(f"env id {env_id!r} is not registered; rewardlab registers: {known}")
    kwargs = make_kwargs(env_cfg)
    try:
        env = gym.make(env_id, render_mode="rgb_array", **kwargs)
    except TypeError as exc:
        raise ConfigError(f"env {env_cfg.get('name', env_id)}: rejected kwargs {sorted(kwargs)}: {exc}") from exc
    return extras_mod.wrap(env, extras) if extras else env


def env_fn(env_cfg: Mapping[str, Any], extras: Collection[str] = ()) -> Callable[[], gym.Env]:
    """A picklable zero-argument constructor, for vector envs in subprocesses."""
    cfg, needs = dict(env_cfg), frozenset(extras)

    def _thunk() -> gym.Env:
        return make_env(cfg, extras=needs)

    return _thunk


def make_vec_env(
    env_cfg: Mapping[str, Any],
    n_envs: int,
    seed: int,
    extras: Collection[str] = (),
) -> VecEnv:
    """Make ``n_envs`` copies as an SB3 VecEnv, seeded ``seed, seed+1, ...`` on their first reset.

    Args:
        env_cfg: Env config mapping (see module docstring).
        n_envs: Number of parallel envs.
        seed: Seed of the first env.
        extras: Per-step extras each env puts in ``info`` (a reward provider's ``needs``, :mod:`envs.extras`).
    """
    if int(n_envs) < 1:
        raise ConfigError(f"n_envs must be >= 1, got {n_envs}")
    vec = env_cfg.get("vec", "dummy")
    if vec not in VEC_KINDS:
        raise ConfigError(f"env.vec={vec!r} is not one of {', '.join(VEC_KINDS)}")
    if vec == "subproc":
        make_env(env_cfg).close()  # fail here, in this process, with a clear message
    fns = [env_fn(env_cfg, extras) for _ in range(int(n_envs))]
    venv: VecEnv = SubprocVecEnv(fns) if vec == "subproc" else DummyVecEnv(fns)
    venv.seed(int(seed))
    return venv
