"""Acting with a saved run's policy outside the runner (data collection, reward evaluation).

``policy=<run dir>`` on ``collect.py`` and ``reward_eval.py`` means: rebuild the run's agent from
its ``config.yaml`` and load one of its checkpoints (the latest by default). The run must have
been trained on the same env id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from envs.errors import ConfigError


def run_checkpoint(policy: str, env_cfg: dict[str, Any], checkpoint: str = "latest") -> tuple[Path, Path]:
    """``(run dir, checkpoint dir)`` of ``policy=<run dir>``, checked against the env.

    Raises:
        ConfigError: Not a run directory, no such checkpoint, or a run of another env.
    """
    from omegaconf import OmegaConf

    from experiments.cli import config_dict
    from experiments.rundir import CHECKPOINTS, latest_checkpoint

    run_dir = Path(str(policy)).expanduser()
    if not (run_dir / "config.yaml").exists():
        raise ConfigError(f"policy={policy} is neither 'random' nor a rewardlab run directory (no config.yaml)")
    if checkpoint in (None, "latest"):
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise ConfigError(f"policy={run_dir} has no checkpoint to act with")
    else:
        ckpt = run_dir / CHECKPOINTS / str(checkpoint)
        if not (ckpt / "agent").is_dir():
            names = sorted(p.name for p in (run_dir / CHECKPOINTS).glob("step_*"))
            raise ConfigError(f"checkpoint={checkpoint!r} not found; {run_dir} has: {', '.join(names) or 'none'}")
    run_env = config_dict(OmegaConf.load(run_dir / "config.yaml").env)
    if run_env.get("id") != env_cfg.get("id"):
        raise ConfigError(
            f"policy={run_dir} was trained on {run_env.get('id')}, not on env={env_cfg.get('name')} "
            f"({env_cfg.get('id')}); pass env={run_env.get('name')}"
        )
    return run_dir, ckpt


def run_n_envs(run_dir: Path) -> int:
    """The run's number of training envs (its agent restores per-env state, e.g. replay buffers)."""
    from omegaconf import OmegaConf

    return int(OmegaConf.load(run_dir / "config.yaml").agent.get("n_envs", 1))


def load_agent(run_dir: Path, checkpoint: Path, venv: Any, seed: int, device: str) -> Any:
    """The run's agent, built on ``venv`` (with :func:`run_n_envs` envs) and loaded from ``checkpoint``.

    The agent acts only: an offline agent is built without its dataset (the checkpoint holds its
    normalisation), a reward-dependent agent gets ``venv``'s provider.
    """
    from omegaconf import OmegaConf

    from experiments.builders import build_agent

    cfg = OmegaConf.load(run_dir / "config.yaml")
    agent = build_agent(cfg.agent, venv, venv.provider, int(seed), device)
    agent.load(checkpoint / "agent")
    return agent
