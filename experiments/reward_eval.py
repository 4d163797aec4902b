#!/usr/bin/env python
"""How well does a reward provider agree with the env's own reward? Correlations and EPIC.

    python experiments/reward_eval.py env=E reward=R [policy=random|RUN_DIR] [samples=N] [out=DIR]
                                      [epic.transitions=N epic.samples=M epic.gamma=G] [seed=S]

Collects ``samples`` transitions (uniform random actions, or a saved run's policy), scores each
with the provider (proxy) and keeps the env's reward (true), and writes to ``DIR``:

* ``reward_eval.json``: Pearson and Spearman correlation of proxy and true reward on the samples,
  the EPIC distance (:mod:`rewards.distance`; 0 = the same reward up to potential shaping and
  positive rescaling, 1 = its negation), the settings, and a ``notes`` list saying why a figure is
  missing (a constant reward, an env without a closed-form reward);
* ``reward_eval.png``: proxy vs true reward per transition (and the canonicalised rewards);
* ``reward_eval_samples.npz``: the transitions (``obs``, ``action``, ``next_obs``), ``true_reward``,
  ``proxy_reward`` and ``epic_index`` (the transitions EPIC was computed on; empty without EPIC),
  so every figure can be recomputed (frames are not kept).

EPIC evaluates both rewards on transitions that never happened, so the env's reward must exist in
closed form (``reward_fn`` on the env's card, :mod:`envs.cards`: cartpole, pendulum); the collected
samples are the coverage distribution.

For studies, :mod:`experiments.study_rewards` compares many providers at once with the same machinery
(:func:`collect`, :func:`as_reward_fn`).
"""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

import numpy as np
from typing_extensions import override

from envs.errors import ConfigError
from experiments.cli import check_int, compose_script, config_dict, user_errors
from rewards.base import RewardProvider, TransitionBatch

REPO = Path(__file__).resolve().parents[1]
TRUE_TOLERANCE = 1e-3  # a closed-form true reward must reproduce the env's within this (float32 obs)


class Recorder(RewardProvider):
    """Passes batches to the provider and keeps them (frames included) for the analysis."""

    def __init__(self, inner: RewardProvider) -> None:
        self.inner = inner
        self.needs = inner.needs
        self.batches: list[TransitionBatch] = []
        self.proxies: list[np.ndarray] = []

    @override
    def bind(self, observation_space: Any, action_space: Any) -> None:
        super().bind(observation_space, action_space)
        self.inner.bind(observation_space, action_space)

    @override
    def reward(self, batch: TransitionBatch) -> np.ndarray:
        proxy = self.inner.reward(batch)
        self.batches.append(batch)
        self.proxies.append(np.asarray(proxy, dtype=np.float32))
        return proxy

    @override
    def close(self) -> None:
        self.inner.close()


def _validate(cfg: Any) -> None:
    for key, low in (("samples", 2), ("n_envs", 1), ("epic.transitions", 2), ("epic.samples", 1)):
        check_int(cfg, key, low)
    if not 0.0 <= float(cfg.epic.gamma) <= 1.0:
        raise ConfigError(f"epic.gamma={cfg.epic.gamma} must lie in [0, 1]")


def true_reward_fn(env_cfg: dict[str, Any]) -> tuple[Any, str | None]:
    """The env's closed-form reward and its name, or ``(None, None)`` when the env's card has none.

    The reward is a numpy ``f(obs, action, next_obs) -> (batch,)`` float64; its name is the card's
    ``module:function``.
    """
    from envs.cards import closed_forms, numpy_fn

    try:
        reward, _ = closed_forms(env_cfg)
    except ConfigError:  # an id without a card (a plain Gymnasium id)
        reward = None
    if reward is None:
        return None, None
    fn = numpy_fn(reward)
    return (lambda obs, action, next_obs: fn(obs, action, next_obs).astype(np.float64)), f"{reward.__module__}:{reward.__qualname__}"


def collect(cfg: Any, env_cfg: dict[str, Any], provider: RewardProvider, policy_dir: Path | None, device: str) -> Recorder:
    """Step the env until ``cfg.samples`` transitions are recorded (module docstring)."""
    from tqdm import tqdm

    from envs.make import make_vec_env
    from experiments.evaluation import array_obs
    from rewards.wrapper import RewardVecEnv

    recorder = Recorder(provider)
    n_envs = int(cfg.n_envs)
    if policy_dir is not None:
        from experiments.policies import run_n_envs

        n_envs = run_n_envs(policy_dir)  # the agent restores per-env state (replay buffers)
    venv = RewardVecEnv(make_vec_env(env_cfg, n_envs, int(cfg.seed), extras=provider.needs), recorder)
    agent = None
    if policy_dir is not None:
        from experiments.policies import load_agent, run_checkpoint

        agent = load_agent(policy_dir, run_checkpoint(str(policy_dir), env_cfg)[1], venv, int(cfg.seed), device)
    space = venv.action_space
    space.seed(int(cfg.seed))
    obs = venv.reset()
    collected = 0
    with tqdm(total=int(cfg.samples), desc="collecting", unit="transition", disable=not sys.stderr.isatty()) as bar:
        while collected < int(cfg.samples):
            if agent is None:
                actions = np.stack([space.sample() for _ in range(venv.num_envs)])
            else:
                actions = agent.act(obs, deterministic=bool(cfg.deterministic))
            next_obs, _, _, _ = venv.step(actions)
            obs = array_obs(next_obs)
            collected += venv.num_envs
            bar.update(venv.num_envs)
    if agent is not None:
        agent.close()
    venv.close()
    return recorder


def concat_batches(recorder: Recorder, n: int) -> dict[str, Any]:
    """The first ``n`` recorded transitions as arrays.

    Returns:
        ``obs``, ``action``, ``next_obs`` ``(n, ...)``; ``env_reward``, ``terminated``, ``truncated``, ``proxy``
        ``(n,)``; ``frames`` ``(n, H, W, 3)`` (``None`` where the provider needs none).
    """

    def cat(name: str) -> Any:
        parts = [getattr(b, name) for b in recorder.batches]
        return None if parts[0] is None else np.concatenate(parts)[:n]

    data = {k: cat(k) for k in ("obs", "action", "next_obs", "env_reward", "terminated", "truncated", "frames")}
    data["proxy"] = np.concatenate(recorder.proxies)[:n]
    return data


def _fmt(x: float | None) -> str:
    return "undefined" if x is None else f"{x:.3f}"


def _plot(
    path: Path, true: np.ndarray, proxy: np.ndarray, canon: tuple[np.ndarray, np.ndarray] | None, title: str, result: dict
) -> None:
    """The scatter plots of ``reward_eval.png``, each panel titled with its figures (as in ``reward_eval.json``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if canon is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.2), squeeze=False)
    ax = axes[0, 0]
    ax.scatter(true, proxy, s=6, alpha=0.4)
    ax.set_xlabel("true reward (env)")
    ax.set_ylabel("proxy reward (provider)")
    ax.set_title(f"per transition: Pearson {_fmt(result['pearson'])}, Spearman {_fmt(result['spearman'])}", fontsize=9)
    if canon is not None:
        ax = axes[0, 1]
        ax.scatter(canon[0], canon[1], s=6, alpha=0.4, color="tab:orange")
        ax.set_xlabel("canonicalised true reward")
        ax.set_ylabel("canonicalised proxy reward")
        ax.set_title(f"EPIC canonicalisation: EPIC distance {_fmt(result['epic_distance'])}", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str]) -> dict[str, Any]:
    """Compare a reward provider with the env's own reward and write the report (module docstring).

    Args:
        argv: ``key=value`` overrides of ``experiments/conf/reward_eval.yaml`` (``env=``, ``reward=``,
            ``policy=``, ``samples=``, ``epic.*=`` ...).

    Returns:
        The contents of ``reward_eval.json``: the settings, summary statistics of both rewards,
        ``pearson``, ``spearman``, ``epic`` (settings and distance), ``epic_distance`` (``None`` when
        undefined), ``notes`` and ``wall_time_s``.

    Raises:
        ConfigError: A bad setting, or a policy run that cannot act on this env.
    """
    cfg = compose_script(argv, "reward_eval", "reward_eval.py")
    _validate(cfg)
    import torch
    from omegaconf import OmegaConf

    from experiments.builders import build_reward
    from experiments.cli import resolve_device
    from experiments.rundir import write_json_atomic
    from rewards import distance

    torch.set_num_threads(1)
    device = resolve_device(str(cfg.device))
    policy_dir = None
    env_cfg = config_dict(cfg.env)
    if str(cfg.policy) != "random":
        from experiments.policies import run_checkpoint

        policy_dir, _ = run_checkpoint(str(cfg.policy), env_cfg)
    reward_name = str(cfg.reward.get("name", "reward"))
    out = Path(str(cfg.out)).expanduser() if cfg.out else REPO / "runs" / "reward_eval" / f"{env_cfg['name']}_{reward_name}_{datetime.now():%Y-%m-%d_%H-%M-%S}"
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    provider = build_reward(cfg.reward)
    recorder = collect(cfg, env_cfg, provider, policy_dir, device)
    data = concat_batches(recorder, int(cfg.samples))
    true, proxy = data["env_reward"].astype(np.float64), data["proxy"].astype(np.float64)
    notes: list[str] = []
    result: dict[str, Any] = {
        "env": env_cfg["name"],
        "reward": reward_name,
        "reward_config": OmegaConf.to_container(cfg.reward, resolve=True),
        "policy": "random" if policy_dir is None else str(policy_dir),
        "samples": len(true),
        "seed": int(cfg.seed),
        "true_reward": {"mean": float(true.mean()), "std": float(true.std()), "min": float(true.min()), "max": float(true.max())},
        "proxy_reward": {"mean": float(proxy.mean()), "std": float(proxy.std()), "min": float(proxy.min()), "max": float(proxy.max())},
        "pearson": distance.pearson(true, proxy),
        "spearman": distance.spearman(true, proxy),
    }
    for name, values in (("true", true), ("proxy", proxy)):
        if values.std() == 0.0:
            notes.append(f"the {name} reward is constant ({values[0]:g}) on these samples: correlations are undefined")

    epic_result, canon, epic_index = _epic(cfg, env_cfg, provider, data, notes)
    result["epic"] = epic_result
    result["epic_distance"] = epic_result["distance"]
    result["notes"] = notes
    result["wall_time_s"] = round(time.time() - t0, 3)
    provider.close()
    write_json_atomic(out / "reward_eval.json", result)
    np.savez(out / "reward_eval_samples.npz", obs=data["obs"], action=data["action"], next_obs=data["next_obs"],
             true_reward=true, proxy_reward=proxy, epic_index=epic_index)  # fmt: skip
    _plot(out / "reward_eval.png", true, proxy, canon, f"{env_cfg['name']}: {reward_name} vs true ({result['policy']} policy)", result)

    print(f"{env_cfg['name']} / {reward_name}: {len(true)} transitions | pearson {_fmt(result['pearson'])} | "
          f"spearman {_fmt(result['spearman'])} | EPIC {_fmt(result['epic_distance'])} | {result['wall_time_s']:.1f} s")
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {out / 'reward_eval.json'}, {out / 'reward_eval.png'} and {out / 'reward_eval_samples.npz'}")
    return result


def as_reward_fn(provider: RewardProvider, true_fn: Any) -> Any:
    """A provider as a batched ``f(obs, action, next_obs, frames) -> (batch,)`` on transitions that never happened.

    The batch's ``env_reward`` comes from the env's closed-form reward ``true_fn`` (for providers built
    on it: ``env``, ``shaped``); no transition counts as terminal.
    """

    def reward_fn(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, frames: np.ndarray | None) -> np.ndarray:
        n = len(obs)
        batch = TransitionBatch(obs=obs, action=action, next_obs=next_obs,
                                env_reward=true_fn(obs, action, next_obs).astype(np.float32),
                                terminated=np.zeros(n, bool), truncated=np.zeros(n, bool),
                                extras={} if frames is None else {"frame": frames})  # fmt: skip
        return provider.reward(batch)

    return reward_fn


def _epic(
    cfg: Any, env_cfg: dict[str, Any], provider: RewardProvider, data: dict[str, Any], notes: list[str]
) -> tuple[dict[str, Any], Any, np.ndarray]:
    """EPIC distance between the provider and the env's closed-form reward (module docstring).

    Returns:
        ``(settings with the distance, (canonical true, canonical proxy) or None, (m,) indices of
        the samples the distance was computed on)`` (no indices when EPIC was skipped).
    """
    skipped = np.zeros(0, dtype=np.int64)
    from rewards import distance

    true_fn, true_name = true_reward_fn(env_cfg)
    settings: dict[str, Any] = {"gamma": float(cfg.epic.gamma), "transitions": int(cfg.epic.transitions), "samples": int(cfg.epic.samples),
                "true_reward": true_name, "distance": None}
    if true_fn is None:
        notes.append(f"EPIC needs the env's reward in closed form; env {env_cfg['name']} has no true_reward "
                     "(no reward_fn on its env card, see envs/cards.py)")
        return settings, None, skipped
    error = float(np.max(np.abs(true_fn(data["obs"], data["action"], data["next_obs"]) - data["env_reward"])))
    settings["true_reward_max_error"] = error
    if error > TRUE_TOLERANCE:
        notes.append(f"the closed-form true reward {true_name} does not reproduce the env's reward on the samples "
                     f"(max error {error:.3g}); EPIC skipped")
        return settings, None, skipped

    proxy_fn = as_reward_fn(provider, true_fn)
    rng = np.random.default_rng(int(cfg.seed))
    n = min(int(cfg.epic.transitions), len(data["obs"]))
    idx = rng.choice(len(data["obs"]), size=n, replace=False)
    frames = data["frames"]
    coverage = distance.Transitions(data["obs"], data["action"], data["next_obs"], frames)
    evaluation = distance.Transitions(data["obs"][idx], data["action"][idx], data["next_obs"][idx], None if frames is None else frames[idx])
    kwargs = dict(gamma=settings["gamma"], samples=settings["samples"])
    no_frames = distance.Transitions(coverage.obs, coverage.action, coverage.next_obs)  # the true reward reads none
    c_true = distance.canonicalize(lambda o, a, n_, f: true_fn(o, a, n_), evaluation, no_frames, rng=np.random.default_rng(int(cfg.seed) + 1), **kwargs)
    c_proxy = distance.canonicalize(proxy_fn, evaluation, coverage, rng=np.random.default_rng(int(cfg.seed) + 1),
                                    state_only=bool(getattr(provider, "state_only", False)), **kwargs)
    settings["distance"] = distance.pearson_distance(c_true, c_proxy)
    if settings["distance"] is None:
        notes.append("a canonicalised reward is constant (a constant or purely shaping reward): EPIC is undefined")
    return settings, (c_true, c_proxy), idx


if __name__ == "__main__":
    with user_errors():
        main(sys.argv[1:])
