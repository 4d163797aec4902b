"""How far apart are a study's reward providers? EPIC / STARC where the env's reward has a closed form, correlations where not.

:func:`run_distances` rebuilds each group's provider from its first run (:func:`run_provider`: a reward
program from the run's own ``reward_program.py``, a learned reward from the run's last checkpoint) and
compares the providers of each env in one of two ways:

* **EPIC and STARC** (:func:`distance_matrix`) where the env's card gives its reward in closed form
  (:mod:`envs.cards`: cartpole, pendulum, MuJoCo): both rewards are evaluated on transitions that never
  happened (the canonicalisation's), which needs the true reward as a function. EPIC: Gleave et al.,
  2021, "Quantifying Differences in Reward Functions"; STARC: Skalse et al., 2024, "STARC: A General
  Framework For Quantifying Differences Between Reward Functions" (:mod:`rewards.distance`).
* **Pearson and Spearman correlations** (:func:`correlation_matrix`) elsewhere (job-shop, MiniGrid, text):
  on the runs' own transitions, i.e. transitions collected by stepping the env with each run's final policy
  (its latest checkpoint, actions sampled from the policy) and scored on the spot by the group's provider,
  the env's own reward kept beside it (:func:`experiments.reward_eval.collect`). Only the rewards of
  transitions that happened are compared, so potential shaping and rescaling are not factored out as
  EPIC does: a shaped copy of the true reward can correlate imperfectly with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.cli import config_dict
from experiments.reward_eval import as_reward_fn, collect, concat_batches, true_reward_fn
from rewards import distance
from rewards.base import RewardProvider, TransitionBatch


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

    from rewards.env import EnvReward

    true_fn, true_name = true_reward_fn(env_cfg)
    if true_fn is None:
        return None
    cfg = SimpleNamespace(samples=samples, n_envs=4, seed=seed, deterministic=False)
    data = concat_batches(collect(cfg, env_cfg, EnvReward(), None, "cpu"), samples)
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


def correlation_matrix(
    env_cfg: dict[str, Any], providers: Mapping[str, RewardProvider], policies: Mapping[str, Sequence[Path | None]],
    samples: int = 1000, seed: int = 0, device: str = "cpu",
) -> dict[str, Any]:  # fmt: skip
    """Pearson and Spearman correlations of providers with the true reward on their runs' own transitions.

    Each provider's transitions: ``samples`` split evenly over its runs' final policies (``policies[name]``:
    run directories, their latest checkpoint, actions sampled from the policy; ``None``: uniform random
    actions), scored by that provider as they are collected, the env's reward beside (``own``). Providers
    that need no extras are then scored on the pool of every provider's transitions (with their real
    ``env_reward``, ``terminated`` and ``truncated``) and compared pairwise, ``true`` (the env's reward) first.
    Providers must be bound (and loaded) already.

    Args:
        env_cfg: The env config.
        providers: ``{name: provider}``.
        policies: ``{name: [run dir or None, ...]}``, one entry per run that acts (at least one per provider).
        samples: Transitions per provider.
        seed: Seed of the envs and the policies' sampling.
        device: Device of the policies.

    Returns:
        ``{"names": [...] (the pooled providers, after "true"), "pearson": [[...]], "spearman": [[...]]``
        (``None`` where a reward is constant), ``"transitions"`` (pooled), ``"own": {name: {"pearson",
        "spearman", "n"}}``, ``"policies": {name: [run dir or "random", ...]}}``.
    """
    from types import SimpleNamespace

    fields = ("obs", "action", "next_obs", "env_reward", "terminated", "truncated")
    pool: list[dict[str, np.ndarray]] = []
    own: dict[str, dict[str, Any]] = {}
    for k, (name, provider) in enumerate(providers.items()):
        runs = list(policies[name])
        parts = []
        for i, run in enumerate(runs):
            cfg = SimpleNamespace(
                samples=max(2, samples // len(runs)), n_envs=1, seed=seed + 1000 * k + i, deterministic=False
            )
            parts.append(concat_batches(collect(cfg, env_cfg, provider, run, device), cfg.samples))
        data = {key: np.concatenate([p[key] for p in parts]) for key in (*fields, "proxy")}
        true, proxy = data["env_reward"].astype(np.float64), data["proxy"].astype(np.float64)
        own[name] = {
            "pearson": distance.pearson(true, proxy),
            "spearman": distance.spearman(true, proxy),
            "n": len(true),
        }
        pool.append(data)
    pooled = {key: np.concatenate([d[key] for d in pool]) for key in fields}
    batch = TransitionBatch(pooled["obs"], pooled["action"], pooled["next_obs"], pooled["env_reward"],
                            pooled["terminated"], pooled["truncated"])  # fmt: skip
    rewards = {"true": batch.env_reward.astype(np.float64)}
    rewards.update(
        {name: np.asarray(p.reward(batch), dtype=np.float64) for name, p in providers.items() if not p.needs}
    )
    names = list(rewards)
    return {
        "names": names, "transitions": len(batch), "own": own,
        "pearson": [[distance.pearson(rewards[a], rewards[b]) for b in names] for a in names],
        "spearman": [[distance.spearman(rewards[a], rewards[b]) for b in names] for a in names],
        "policies": {name: [str(r) if r is not None else "random" for r in runs] for name, runs in policies.items()},
    }  # fmt: skip


def run_provider(run: Path, env_cfg: dict[str, Any]) -> RewardProvider:
    """A finished run's reward provider, bound to its env: its reward program, a learned reward's last checkpoint.

    Raises:
        Exception: Whatever building the provider raises (a missing package, a program that no longer loads).
    """
    from omegaconf import OmegaConf

    from envs.make import make_env
    from experiments.builders import build_reward
    from experiments.rundir import latest_checkpoint
    from rewards.base import LearnedReward

    reward_cfg = OmegaConf.load(run / "config.yaml").reward
    if (run / "reward_program.py").exists():  # the program the run used, wherever the report is built
        reward_cfg.source, reward_cfg.task = str(run / "reward_program.py"), None
    provider = build_reward(reward_cfg)
    probe = make_env(env_cfg)
    provider.bind(probe.observation_space, probe.action_space)
    probe.close()
    checkpoint = latest_checkpoint(run)
    if isinstance(provider, LearnedReward) and checkpoint is not None and (checkpoint / "reward").exists():
        provider.load(checkpoint / "reward")
    return provider


def run_distances(groups: Sequence[Any], samples: int = 1000) -> list[dict[str, Any]]:
    """EPIC / STARC matrices, or correlations on the runs' own transitions, between the providers of groups of runs.

    ``groups`` are :class:`experiments.report.Group`: ``identity`` (``env``), ``name`` and ``runs`` (summaries
    with their ``run`` directory). Per env: :func:`distance_matrix` on ``samples`` uniform-random transitions
    where the env's reward has a closed form (providers that score frames, which sampled states have not: their
    own-transition correlations, ``own_only``), else :func:`correlation_matrix` on ``samples`` transitions of
    each group's final policies (every run of the group; module docstring).

    Returns:
        Per env: ``{"env", "matrix" (distance_matrix's result or None), "correlations" (correlation_matrix's
        result or None), "notes"}``; an env is left out when it has neither and no notes.
    """
    from omegaconf import OmegaConf

    out = []
    for env in dict.fromkeys(g.identity["env"] for g in groups):
        members = [g for g in groups if g.identity["env"] == env]
        providers: dict[str, Any] = {}
        notes: list[str] = []
        matrix = correlations = None
        try:
            env_cfg = config_dict(OmegaConf.load(Path(members[0].runs[0]["run"]) / "config.yaml").env)
            closed_form = true_reward_fn(env_cfg)[0] is not None
            for g in members:
                try:
                    provider = run_provider(Path(g.runs[0]["run"]), env_cfg)
                except Exception as exc:  # a provider that cannot be rebuilt here is left out, with the reason
                    notes.append(f"{g.name}: not compared ({' '.join(str(exc).split())[:200]})")
                    continue
                providers[g.name] = provider
                if provider.needs:
                    notes.append(
                        f"{g.name}: correlated on its own transitions only (it needs {', '.join(sorted(provider.needs))})"
                    )
            sampled = {k: p for k, p in providers.items() if closed_form and not p.needs}
            if sampled:
                matrix = distance_matrix(env_cfg, sampled, samples=samples)
            correlated = {k: p for k, p in providers.items() if k not in sampled}  # e.g. CLIP: sampled states have no frames
            if correlated:
                policies = {g.name: [Path(r["run"]) for r in g.runs] for g in members if g.name in correlated}
                correlations = correlation_matrix(env_cfg, correlated, policies, samples=samples)
                correlations["own_only"] = closed_form  # beside EPIC / STARC: each group on its own transitions only
        except Exception as exc:  # fake or foreign run directories: no distances, the rest of the report stands
            notes.append(f"no distances for {env}: {' '.join(str(exc).split())[:200]}")
        finally:
            for provider in providers.values():
                provider.close()
        if matrix is not None or correlations is not None or notes:
            out.append({"env": env, "matrix": matrix, "correlations": correlations, "notes": notes})
    return out
