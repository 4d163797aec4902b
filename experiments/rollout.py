#!/usr/bin/env python
"""Re-render videos of a saved run's policy, with true and proxy return per episode.

    python experiments/rollout.py run=<run dir> [episodes=N] [checkpoint=latest|step_000004000]
                                  [out=<dir>] [seed=N] [max_frames=N] [deterministic=true] [device=cpu]

Videos go to ``<out>/rollout_<checkpoint>_ep<k>.mp4`` (default ``out``: ``<run dir>/videos``) and a
table of the episodes to ``<out>/rollout_<checkpoint>.json``. By default episode ``k`` is reset with
the seed the runner used for ``videos/final_ep<k>.mp4`` (:func:`experiments.runner.video_seed`), so
``episodes=1`` on the final checkpoint reproduces that video; ``seed=N`` resets episode ``k`` with ``N + k``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from envs.errors import ConfigError
from experiments.cli import user_errors

DEFAULTS: dict[str, Any] = {
    "run": None,  # the run directory (required)
    "episodes": 1,  # number of episodes to record
    "checkpoint": "latest",  # latest, or a checkpoint directory name (step_000004000)
    "out": None,  # output directory (default: <run>/videos)
    "seed": None,  # reset seed of episode 0, episode k gets seed + k (default: the runner's video seeds)
    "max_frames": None,  # frames per video (default: the run's video.max_frames)
    "deterministic": True,  # greedy / mean actions
    "device": "cpu",  # cpu | cuda | auto
}


def main(argv: list[str]) -> list[dict[str, Any]]:
    """Re-render videos of a saved run's policy (module docstring).

    Args:
        argv: ``key=value`` arguments (the keys of :data:`DEFAULTS`; ``run=`` is required).

    Returns:
        One dict per episode: ``episode``, ``seed`` and what :func:`experiments.evaluation.record_video`
        reports (``path``, ``frames``, ``length``, ``true_return``, ``proxy_return``, ...).

    Raises:
        ConfigError: An unknown argument, a missing run directory or checkpoint, or a bad value.
    """
    from omegaconf import OmegaConf

    from experiments.rundir import CHECKPOINTS, latest_checkpoint, write_json_atomic

    unknown = [a for a in argv if a.split("=", 1)[0] not in DEFAULTS or "=" not in a]
    if unknown:
        raise ConfigError(f"unknown argument(s) {' '.join(unknown)}; accepted: {', '.join(k + '=' for k in DEFAULTS)}")
    opts = OmegaConf.merge(OmegaConf.create(DEFAULTS), OmegaConf.from_cli(argv))
    if not opts.run:
        raise ConfigError("rollout.py needs run=<run directory>")
    run_dir = Path(str(opts.run)).expanduser()
    if not (run_dir / "config.yaml").exists():
        raise ConfigError(f"run={run_dir} is not a rewardlab run directory (it has no config.yaml)")
    if opts.checkpoint == "latest":
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise ConfigError(f"run={run_dir} has no checkpoint")
    else:
        checkpoint = run_dir / CHECKPOINTS / str(opts.checkpoint)
        if not (checkpoint / "agent").is_dir():
            names = sorted(p.name for p in (run_dir / CHECKPOINTS).glob("step_*"))
            raise ConfigError(f"checkpoint={opts.checkpoint!r} not found; {run_dir} has: {', '.join(names) or 'none'}")
    if not isinstance(opts.episodes, int) or opts.episodes < 1:
        raise ConfigError(f"episodes={opts.episodes!r} must be an integer >= 1")

    import torch

    from experiments.builders import build_agent, build_envs, build_reward
    from experiments.cli import config_dict, resolve_device
    from experiments.evaluation import record_video
    from experiments.runner import video_seed

    torch.set_num_threads(1)
    cfg = OmegaConf.load(run_dir / "config.yaml")
    env_cfg = config_dict(cfg.env)
    provider = build_reward(cfg.reward)
    env = build_envs(env_cfg, int(cfg.agent.get("n_envs", 1)), int(cfg.seed), provider)
    agent = build_agent(cfg.agent, env, provider, int(cfg.seed), resolve_device(str(opts.device)))
    agent.load(checkpoint / "agent")
    out = Path(str(opts.out)).expanduser() if opts.out else run_dir / "videos"
    max_frames = int(opts.max_frames or cfg.video.max_frames)
    episodes = []
    for k in range(int(opts.episodes)):
        reset_seed = int(opts.seed) + k if opts.seed is not None else video_seed(int(cfg.seed), k)
        info = record_video(
            agent,
            env_cfg,
            out / f"rollout_{checkpoint.name}_ep{k}.mp4",
            seed=reset_seed,
            max_frames=max_frames,
            fps=cfg.video.fps,
            deterministic=bool(opts.deterministic),
            provider=provider,
            min_seconds=float(cfg.video.get("min_seconds", 0.0)),
            overlay=bool(cfg.video.get("overlay", True)),
        )
        episodes.append({"episode": k, "seed": reset_seed, **info})
        success = "" if info["success"] is None else f"  success {info['success']}"
        print(
            f"ep{k}: {info['length']} steps  true return {info['true_return']:.2f}  "
            f"proxy return {info['proxy_return']:.2f}{success}  -> {info['path']}"
        )
    write_json_atomic(out / f"rollout_{checkpoint.name}.json", {"run": str(run_dir), "checkpoint": checkpoint.name, "episodes": episodes})
    agent.close()
    return episodes


if __name__ == "__main__":
    with user_errors():
        main(sys.argv[1:])
