"""Build single and vectorised envs from an env config (``experiments/conf/env/<name>.yaml``).

An env config is a mapping with these keys::

    name: cartpole                 # the config's name (used in run names and summaries)
    id: rewardlab/CartPole-v1      # a registered Gymnasium id
    kwargs: {}                     # passed to gymnasium.make
    max_episode_steps: null        # override the registered time limit
    render: {width: 384, height: 256}
    vec: dummy                     # dummy (one process) or subproc (one process per env)
    eval_kwargs: {}                # optional: keys the evaluation envs get instead (a text env's held-out split)

What rewardlab knows about the env beyond its config (closed-form reward, termination, prompt
layout, scripted policies, features) is on its card, found by the id (:mod:`envs.cards`).
Any other key is passed to ``gymnasium.make`` as well, so that an env's main parameters can sit
at the top of its config and be overridden as ``env.<key>=...`` (e.g. ``env.instance=ta01``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecEnvWrapper

import envs  # registers the rewardlab ids
from envs import extras as extras_mod
from envs.errors import ConfigError

VEC_KINDS = ("dummy", "subproc")
RESERVED = {"name", "id", "kwargs", "render", "max_episode_steps", "vec", "eval_kwargs"}


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


#: The purposes a run seeds envs for; each gets its own seed stream (:func:`env_seeds`).
STREAMS = ("train", "eval", "video", "collect")


def env_seeds(seed: int, n: int, stream: str = "train", generation: int = 0) -> list[int]:
    """Reset seeds of ``n`` envs for one purpose of one run, independent of every other run and purpose.

    Seeds ``seed + i`` make the streams of neighbouring run seeds overlap (env ``i + 1`` of seed 0 is
    env ``i`` of seed 1). Here the seeds come from NumPy's ``SeedSequence`` with the entropy
    ``(seed, stream, generation)``, so different run seeds, purposes (training, evaluation, videos,
    collection) and resumes (``generation``) draw statistically independent seeds.

    Args:
        seed: The run's seed (>= 0).
        n: Number of envs.
        stream: One of :data:`STREAMS`.
        generation: 0 for the first launch; the resume count after a resume (new episodes).

    Returns:
        ``n`` seeds in ``[0, 2**32)``.

    Raises:
        ValueError: An unknown stream.
    """
    if stream not in STREAMS:
        raise ValueError(f"seed stream {stream!r} is not one of {', '.join(STREAMS)}")
    entropy = [int(seed), STREAMS.index(stream), int(generation)]
    return [int(s) for s in np.random.SeedSequence(entropy).generate_state(int(n), dtype=np.uint32)]


def seed_vec_env(venv: VecEnv, seeds: Sequence[int]) -> None:
    """Seed each env of ``venv`` (wrappers included) with its own seed at its next reset.

    SB3's ``VecEnv.seed`` only offers ``seed + i``; its per-env seeds for the next reset live in the
    base VecEnv's ``_seeds`` (stable-baselines3 >= 2.0), which this sets.

    Raises:
        ValueError: ``seeds`` does not have one seed per env.
    """
    base = venv
    while isinstance(base, VecEnvWrapper):
        base = base.venv
    if len(seeds) != base.num_envs:
        raise ValueError(f"{len(seeds)} seeds for {base.num_envs} envs")
    base._seeds = [int(s) for s in seeds]


def _standard_start_method() -> None:
    """Set a standard multiprocessing start method back where a sweep's worker left a foreign one.

    Hydra's joblib launcher runs jobs in loky processes, whose default start method is ``"loky"``;
    every env process started from such a worker tries, and fails, to restore it. This sets
    ``forkserver`` (in that worker only) before env processes are started.
    """
    import multiprocessing

    if multiprocessing.get_start_method(allow_none=True) not in multiprocessing.get_all_start_methods():
        multiprocessing.set_start_method("forkserver", force=True)


def make_vec_env(
    env_cfg: Mapping[str, Any],
    n_envs: int,
    seed: int,
    extras: Collection[str] = (),
    stream: str = "train",
) -> VecEnv:
    """Make ``n_envs`` copies as an SB3 VecEnv, seeded on their first reset from the run's seed stream.

    Args:
        env_cfg: Env config mapping (see module docstring).
        n_envs: Number of parallel envs.
        seed: The run's seed; env ``i`` is reset with ``env_seeds(seed, n_envs, stream)[i]``.
        extras: Per-step extras each env puts in ``info`` (a reward provider's ``needs``, :mod:`envs.extras`).
        stream: What the envs are for (:data:`STREAMS`): training, evaluation, ... each its own seeds.
    """
    if int(n_envs) < 1:
        raise ConfigError(f"n_envs must be >= 1, got {n_envs}")
    vec = env_cfg.get("vec", "dummy")
    if vec not in VEC_KINDS:
        raise ConfigError(f"env.vec={vec!r} is not one of {', '.join(VEC_KINDS)}")
    if vec == "subproc":
        make_env(env_cfg).close()  # fail here, in this process, with a clear message
    if stream == "eval" and env_cfg.get("eval_kwargs"):  # e.g. a text env's held-out prompts
        env_cfg = {**env_cfg, **dict(env_cfg["eval_kwargs"])}
    fns = [env_fn(env_cfg, extras) for _ in range(int(n_envs))]
    if vec == "subproc":
        _standard_start_method()
    venv: VecEnv = SubprocVecEnv(fns, start_method="forkserver") if vec == "subproc" else DummyVecEnv(fns)
    if venv.has_attr("set_shard"):  # envs that serve a finite list (a text env's prompts) split it among the copies
        for i in range(int(n_envs)):
            venv.env_method("set_shard", i, int(n_envs), indices=[i])
    seed_vec_env(venv, env_seeds(int(seed), int(n_envs), stream))
    return venv
