"""Evaluation on the true reward, and rollout videos.

:func:`evaluate` runs exactly ``episodes`` episodes spread over a vector env without favouring
short episodes (each env contributes a fixed quota, as SB3's ``evaluate_policy``), with the proxy
reward measured on the same episodes. :func:`record_video` writes an mp4 of an episode (and more while the clip is too short to watch).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, SupportsFloat

import numpy as np

from agents.base import Agent
from envs.extras import single
from envs.make import env_seeds, make_env, seed_vec_env
from rewards.base import RewardProvider, TransitionBatch, check_rewards
from rewards.wrapper import EpisodeStats, RewardVecEnv


def evaluate(agent: Agent, venv: RewardVecEnv, episodes: int, seed: int, deterministic: bool = True) -> list[EpisodeStats]:
    """Run ``episodes`` full episodes; env ``i`` is reset with the run's ``i``-th evaluation seed at every call.

    Reseeding each time means every evaluation of a run starts from the same initial states,
    so successive evaluations differ by the policy only; the evaluation seeds are a stream of their
    own (:func:`envs.make.env_seeds`), apart from the training envs' and from other run seeds'.

    Args:
        agent: Acts on raw observations.
        venv: Evaluation env wrapped with the run's reward provider.
        episodes: Number of episodes to return.
        seed: The run's seed.
        deterministic: Greedy / mean actions.
    """
    n = venv.num_envs
    quota = np.array([(episodes + i) // n for i in range(n)], dtype=np.int64)
    done = np.zeros(n, dtype=np.int64)
    seed_vec_env(venv, env_seeds(seed, n, "eval"))
    obs = venv.reset()
    venv.pop_episodes()
    results: list[EpisodeStats] = []
    while (done < quota).any():
        next_obs, _, _, _ = venv.step(agent.act(obs, deterministic=deterministic))
        obs = array_obs(next_obs)
        for ep in venv.pop_episodes():
            if done[ep.env_index] < quota[ep.env_index]:
                done[ep.env_index] += 1
                results.append(ep)
    return results


def summarize(episodes: Sequence[EpisodeStats]) -> dict[str, Any]:
    """Means over episodes: true/proxy return (with std), length, success rate, env figures.

    ``success`` is ``None`` when the env defines no success; env-specific figures
    (``info["episode_metrics"]``) are averaged under their own names; ``components`` holds the
    mean per-episode sum of each named reward component the provider reports; ``artifacts`` maps the
    episodes' file paths to their contents (one per path; a ``.jsonl`` path: the list of every episode's record).
    """
    true = np.array([e.true_return for e in episodes], dtype=np.float64)
    proxy = np.array([e.proxy_return for e in episodes], dtype=np.float64)
    successes = [e.success for e in episodes if e.success is not None]
    out: dict[str, Any] = {
        "true_return": float(true.mean()),
        "true_return_std": float(true.std()),
        "proxy_return": float(proxy.mean()),
        "proxy_return_std": float(proxy.std()),
        "success": float(np.mean(successes)) if successes else None,
        "episode_length": float(np.mean([e.length for e in episodes])),
        "episodes": len(episodes),
    }
    keys = sorted({k for e in episodes for k in e.metrics})
    for key in keys:
        values = [e.metrics[key] for e in episodes if key in e.metrics]
        out[key] = float(np.mean(values))
    names = sorted({k for e in episodes for k in e.components})
    out["components"] = {k: float(np.mean([e.components[k] for e in episodes if k in e.components])) for k in names}
    out["artifacts"] = {path: obj for e in episodes for path, obj in e.artifacts.items() if not path.endswith(".jsonl")}
    for path in sorted({p for e in episodes for p in e.artifacts if p.endswith(".jsonl")}):
        out["artifacts"][path] = [e.artifacts[path] for e in episodes if path in e.artifacts]  # one record per episode
    return out


def record_video(
    agent: Agent,
    env_cfg: Mapping[str, Any],
    path: Path,
    seed: int,
    max_frames: int,
    fps: float | None = None,
    deterministic: bool = True,
    provider: RewardProvider | None = None,
    min_seconds: float = 0.0,
    overlay: bool = True,
) -> dict[str, Any]:
    """Roll out an episode (and more, while the clip is shorter than ``min_seconds``) to an H.264 mp4.

    The file is written atomically. Episode ``k`` of the clip is reset with ``seed + k``; the
    returned figures are the first episode's, so one seed always names one episode.

    Args:
        agent: The policy.
        env_cfg: Env config (its ``render`` size sets the frame size).
        path: Output ``.mp4`` file.
        seed: Reset seed of the first episode.
        max_frames: Stop after this many frames.
        fps: Frames per second (``None``: the env's ``render_fps``).
        deterministic: Greedy / mean actions.
        provider: Also measure the proxy return under this reward provider.
        min_seconds: Keep recording further episodes until the clip lasts this long (short episodes,
            e.g. a falling hopper, still give a clip one can watch); 0: one episode.
        overlay: Write the episode, step and returns so far on each frame (the provider scores the
            frame as rendered, before the text).

    Returns:
        ``{"path", "frames", "episodes", "true_return", "proxy_return", "length", "terminated", "success"}``:
        the clip's frames and episodes, and the first episode's figures (``proxy_return`` and
        ``success`` are ``None`` when unknown).
    """
    import imageio.v2 as imageio

    from experiments.plots import annotate

    needs = provider.needs if provider is not None else frozenset()
    env = make_env(env_cfg, extras=needs - {"frame"})  # the frame the video shows is the provider's too
    fps = float(fps or env.metadata.get("render_fps") or 30)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp_{path.name}")
    writer = imageio.get_writer(
        str(tmp), fps=fps, codec="libx264", pixelformat="yuv420p", quality=7, macro_block_size=16, ffmpeg_log_level="error"
    )
    frames, episode = 0, 0
    first: dict[str, Any] | None = None
    try:
        while frames < max_frames:
            true_return, proxy_return, length, terminated, success = 0.0, 0.0, 0, False, None
            obs, _ = env.reset(seed=int(seed) + episode)
            frame = _render(env)
            text = _caption(episode, 0, 0.0, 0.0 if provider is not None else None)
            writer.append_data(annotate(frame, text) if overlay else frame)
            frames += 1
            while frames < max_frames:
                action = agent.act(np.asarray(obs)[None], deterministic=deterministic)[0]
                next_obs, reward, terminated, truncated, info = env.step(action)
                frame = _render(env)
                true_return += float(reward)
                if provider is not None:
                    extras = {**single(info, needs - {"frame"}), **({"frame": frame[None]} if "frame" in needs else {})}
                    proxy_return += float(
                        _score_one(provider, obs, action, next_obs, reward, terminated, truncated, extras)[0]
                    )
                length += 1
                text = _caption(episode, length, true_return, proxy_return if provider is not None else None)
                writer.append_data(annotate(frame, text) if overlay else frame)
                frames += 1
                obs = next_obs
                if terminated or truncated:
                    success = info.get("success")
                    break
            if first is None:
                first = {
                    "length": length,
                    "true_return": true_return,
                    "proxy_return": proxy_return if provider is not None else None,
                    "terminated": bool(terminated),
                    "success": success,
                }
            episode += 1
            if frames / fps >= min_seconds:
                break
    finally:
        writer.close()
        env.close()
    os.replace(tmp, path)
    assert first is not None  # max_frames >= 1: the first episode starts
    return {"path": str(path), "frames": frames, "episodes": episode, **first}


def _caption(episode: int, step: int, true_return: float, proxy_return: float | None) -> str:
    proxy = "" if proxy_return is None else f"  proxy {proxy_return:.1f}"
    return f"episode {episode}  step {step}  true {true_return:.1f}{proxy}"


def array_obs(obs: Any) -> np.ndarray:
    """The observations of a :class:`RewardVecEnv` step, typed as the array they are.

    ``VecEnv.step`` is typed to return any of SB3's observation kinds; a :class:`RewardVecEnv`
    refuses all but arrays when it is reset.

    Args:
        obs: ``(n_envs, *obs_shape)`` observations returned by ``venv.step``.

    Returns:
        ``obs`` itself.

    Raises:
        TypeError: ``obs`` is not an array (a dict or tuple observation space).
    """
    if not isinstance(obs, np.ndarray):
        raise TypeError(f"RewardVecEnv needs array observations, got {type(obs).__name__}")
    return obs


def _render(env: Any) -> np.ndarray:
    """The ``(H, W, 3)`` uint8 frame of an env made with ``render_mode="rgb_array"``."""
    frame = env.render()
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"{type(env).__name__}.render() returned {type(frame).__name__}, not an rgb_array frame")
    return frame


def _score_one(
    provider: RewardProvider,
    obs: Any,
    action: Any,
    next_obs: Any,
    reward: SupportsFloat,
    terminated: bool,
    truncated: bool,
    extras: Mapping[str, np.ndarray],
) -> np.ndarray:
    """The provider's reward for a single transition (a batch of one; videos only, not a hot path)."""
    batch = TransitionBatch(
        obs=np.asarray(obs)[None],
        action=np.asarray(action)[None],
        next_obs=np.asarray(next_obs)[None],
        env_reward=np.array([reward], dtype=np.float32),
        terminated=np.array([terminated]),
        truncated=np.array([truncated]),
        extras=extras,
    )
    return check_rewards(provider.reward(batch), 1, source=type(provider).__name__)


def default_eval_every(steps: int) -> int:
    """Ten evaluations per run."""
    return max(1, math.ceil(steps / 10))
