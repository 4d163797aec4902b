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

For studies (:mod:`experiments.report`), :func:`distance_matrix` compares many providers at once
(EPIC and STARC between every pair and to the true reward) and :func:`run_distances` rebuilds the
providers of finished runs (a learned one from its last checkpoint) to do so.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
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


def _true_reward_fn(env_cfg: dict[str, Any]) -> tuple[Any, str | None]:
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


def _concat(recorder: Recorder, n: int) -> dict[str, Any]:
    def cat(name: str) -> Any:
        parts = [getattr(b, name) for b in recorder.batches]
        return None if parts[0] is None else np.concatenate(parts)[:n]

    data = {k: cat(k) for k in ("obs", "action", "next_obs", "env_reward", "terminated", "frames")}
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
    data = _concat(recorder, int(cfg.samples))
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


def distance_matrix(
    env_cfg: dict[str, Any], providers: dict[str, RewardProvider], samples: int = 1000, transitions: int = 500,
    expectation_samples: int = 64, gamma: float = 0.99, seed: int = 0,
) -> dict[str, Any] | None:  # fmt: skip
    """EPIC and STARC distances between every pair of providers and the env's closed-form reward ``true``.

    Transitions come from uniform random actions (the coverage set); every reward is canonicalised once
    with the same coverage samples (:func:`rewards.distance.canonicalize`), then compared pairwise: EPIC
    (Pearson distance of the canonical rewards, ``None`` where one is constant) and sample-based STARC
    (L2-standardised, half the L2 distance; :mod:`rewards.distance`). Providers must be bound (and
    loaded) already and need no frames.

    Args:
        env_cfg: The env config.
        providers: ``{name: provider}``.
        samples: Transitions collected.
        transitions: Transitions the distances are computed on (a random subset).
        expectation_samples: ``(A, S')`` samples per canonicalisation expectation.
        gamma: Discount of the shaping the distances ignore.
        seed: Seed of the collection and the samples.

    Returns:
        ``{"names": [...], "epic": [[...]], "starc": [[...]], "samples": ..., ...}`` (``names[0]`` is ``true``),
        or ``None`` when the env has no closed-form reward.
    """
    from types import SimpleNamespace

    from rewards import distance
    from rewards.env import EnvReward

    true_fn, true_name = _true_reward_fn(env_cfg)
    if true_fn is None:
        return None
    cfg = SimpleNamespace(samples=samples, n_envs=4, seed=seed, deterministic=False)
    data = _concat(collect(cfg, env_cfg, EnvReward(), None, "cpu"), samples)
    idx = np.random.default_rng(seed).choice(len(data["obs"]), size=min(transitions, len(data["obs"])), replace=False)
    coverage = distance.Transitions(data["obs"], data["action"], data["next_obs"])
    evaluation = distance.Transitions(data["obs"][idx], data["action"][idx], data["next_obs"][idx])
    fns = {"true": lambda o, a, n_, f: true_fn(o, a, n_), **{k: as_reward_fn(p, true_fn) for k, p in providers.items()}}
    canon = {k: distance.canonicalize(fn, evaluation, coverage, gamma, expectation_samples, np.random.default_rng(seed + 1))
             for k, fn in fns.items()}  # fmt: skip
    names = list(canon)
    return {
        "names": names, "true_reward": true_name, "samples": samples, "transitions": len(idx), "gamma": gamma,
        "epic": [[distance.pearson_distance(canon[a], canon[b]) for b in names] for a in names],
        "starc": [[distance.starc_from_canonical(canon[a], canon[b]) for b in names] for a in names],
    }  # fmt: skip


def run_distances(groups: Sequence[Any], samples: int = 1000) -> list[dict[str, Any]]:
    """EPIC and STARC matrices between the providers of groups of runs and the true reward, per env with a closed form.

    ``groups`` are :class:`experiments.report.Group`: ``identity`` (``env``), ``name`` and ``runs`` (summaries
    with their ``run`` directory).

    Each group's provider is rebuilt from its first run's ``config.yaml`` (a reward program from the run's
    own ``reward_program.py``; a learned reward loaded from the run's last checkpoint) and compared with
    :func:`experiments.reward_eval.distance_matrix` on uniform-random transitions.

    Returns:
        Per env: ``{"env", "labels" (the groups', after "true"), "matrix" (distance_matrix's result), "notes"}``;
        envs without a closed-form reward are left out.
    """
    from omegaconf import OmegaConf

    from envs.make import make_env
    from experiments.builders import build_reward
    from experiments.rundir import latest_checkpoint
    from rewards.base import LearnedReward

    out = []
    for env in dict.fromkeys(g.identity["env"] for g in groups):
        members = [g for g in groups if g.identity["env"] == env]
        providers: dict[str, Any] = {}
        notes: list[str] = []
        try:
            env_cfg = config_dict(OmegaConf.load(Path(members[0].runs[0]["run"]) / "config.yaml").env)
            for g in members:
                run = Path(g.runs[0]["run"])
                reward_cfg = OmegaConf.load(run / "config.yaml").reward
                if (run / "reward_program.py").exists():  # the program the run used, wherever the report is built
                    reward_cfg.source, reward_cfg.task = str(run / "reward_program.py"), None
                try:
                    provider = build_reward(reward_cfg)
                except Exception as exc:  # a provider that cannot be rebuilt here is left out, with the reason
                    notes.append(f"{g.name}: not compared ({' '.join(str(exc).split())[:200]})")
                    continue
                if provider.needs:
                    notes.append(f"{g.name}: not compared (it needs {', '.join(sorted(provider.needs))})")
                    provider.close()
                    continue
                probe = make_env(env_cfg)
                provider.bind(probe.observation_space, probe.action_space)
                probe.close()
                checkpoint = latest_checkpoint(run)
                if isinstance(provider, LearnedReward) and checkpoint is not None and (checkpoint / "reward").exists():
                    provider.load(checkpoint / "reward")
                providers[g.name] = provider
            matrix = distance_matrix(env_cfg, providers, samples=samples)
        except Exception as exc:  # fake or foreign run directories: no distances, the rest of the report stands
            notes.append(f"no distances for {env}: {' '.join(str(exc).split())[:200]}")
            matrix = None
        finally:
            for provider in providers.values():
                provider.close()
        if matrix is not None or notes:
            out.append({"env": env, "matrix": matrix, "notes": notes})
    return out


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

    true_fn, true_name = _true_reward_fn(env_cfg)
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
