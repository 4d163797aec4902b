"""Seeds and episode statistics that do not depend on how the work is split (issue 17, faults 4-6, 8)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from envs.make import STREAMS, env_seeds, make_vec_env
from experiments.cli import check_composes
from experiments.runner import Runner

CARTPOLE = {"name": "cartpole", "id": "rewardlab/CartPole-v1"}


def test_env_seeds_of_neighbouring_runs_and_purposes_do_not_overlap() -> None:
    per_run = [set(env_seeds(seed, 8, stream)) for seed in range(20) for stream in STREAMS]
    everything = set().union(*per_run)
    assert len(everything) == 20 * len(STREAMS) * 8  # no seed shared between runs, purposes or envs
    assert env_seeds(3, 8) == env_seeds(3, 8) and env_seeds(3, 4) == env_seeds(3, 8)[:4]  # reproducible
    assert set(env_seeds(3, 8, "train", 1)).isdisjoint(env_seeds(3, 8, "train", 0))  # a resume: new episodes
    with pytest.raises(ValueError, match="not one of"):
        env_seeds(0, 2, "nope")


def test_vector_envs_of_neighbouring_run_seeds_start_differently() -> None:
    first = {s: make_vec_env(CARTPOLE, 8, s).reset() for s in (0, 1)}
    starts = {(s, i): tuple(np.round(first[s][i], 6)) for s in (0, 1) for i in range(8)}
    assert len(set(starts.values())) == 16  # before: env i+1 of seed 0 was env i of seed 1


@pytest.mark.parametrize("agent", ["ppo", "a2c"])
def test_the_runners_training_and_evaluation_envs_use_their_own_streams(agent: str, tmp_path: Path) -> None:
    """SB3 reseeds its env with seed + i when built; the runner puts the run's streams back."""
    seeds = {}
    for seed in (0, 1):
        cfg = check_composes(["env=cartpole", f"agent={agent}", f"seed={seed}", "agent.n_envs=8"])
        runner = Runner(cfg, tmp_path / f"s{seed}", [], resuming=False)
        train = runner.train_env.venv._seeds  # type: ignore[attr-defined]
        evaluation = runner.eval_env.venv._seeds  # type: ignore[attr-defined]
        assert train == env_seeds(seed, 8, "train") and evaluation == env_seeds(seed, len(evaluation), "eval")
        seeds[seed] = set(train) | set(evaluation)
        runner.train_env.close()
        runner.eval_env.close()
        runner.agent.close()
    assert seeds[0].isdisjoint(seeds[1])


def _collect(tmp_path: Path, name: str, *args: str) -> dict:
    from experiments import collect

    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path / "datasets")
    return collect.main([*args, f"name=local/{name}-v0"])


def test_episode_quota_per_env_does_not_favour_short_episodes(tmp_path: Path) -> None:
    """Random CartPole, 8 episodes: the mean return must not depend on the number of envs (before:
    22.8 with 1 env, 17.5 with 8, because the 8 envs' first finished episodes were kept)."""
    from experiments.collect import _Policy, rollouts

    means = {}
    for n_envs in (1, 8):
        policy_cfg = OmegaConf.create({"policy": "random", "n_envs": n_envs, "deterministic": False})
        runs = [rollouts(CARTPOLE, _Policy(policy_cfg, CARTPOLE, "cpu"), 8, None, seed, frames=False) for seed in range(40)]
        assert all(len(r.episodes) == 8 and r.complete.all() for r in runs)
        means[n_envs] = float(np.mean([r.returns().mean() for r in runs]))
    assert abs(means[8] - means[1]) < 2.5, means  # 40 seeds: standard error of the difference ~1


def test_reference_scores_use_complete_episodes_only(tmp_path: Path) -> None:
    """Pendulum episodes last 200 steps: 1000 steps on 4 envs are 4 full episodes and 4 cut pieces of 50."""
    from envs import data as ds

    out = _collect(tmp_path, "pendulum/random", "env=pendulum", "policy=random", "steps=1000", "n_envs=4")
    data = ds.load("local/pendulum/random-v0", tmp_path / "datasets")
    lengths = np.diff(data.episode_starts)
    full = data.episode_returns()[lengths == 200]
    assert sorted(lengths.tolist()) == [50, 50, 50, 50, 200, 200, 200, 200]
    assert out["ref_min_score"] == pytest.approx(full.mean(), rel=1e-6)  # before: the pieces pulled it to ~ -774
    assert out["return_mean"] == pytest.approx(full.mean(), rel=1e-6)


def test_a_masking_agent_masks_wherever_it_acts() -> None:
    """MaskablePPO with a plain MLP policy on job-shop: evaluation picks only jobs that have operations left."""
    from experiments.builders import build_agent, build_envs, build_reward
    from experiments.evaluation import evaluate

    cfg = check_composes(["env=jobshop", "env.size=6x4", "agent=maskable_ppo", "agent.policy=MlpPolicy",
                          "agent.n_envs=1", "~agent.policy_kwargs.hidden"])  # fmt: skip
    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    reward = build_reward(cfg.reward)
    venv = build_envs(env_cfg, 1, 0, reward)
    agent = build_agent(cfg.agent, venv, reward, 0, "cpu")
    eval_env = build_envs(env_cfg, 2, 0, reward, stream="eval")
    invalid = []
    original = eval_env.step_wait

    def watch() -> tuple:
        out = original()
        invalid.extend(bool(info.get("invalid_action")) for info in out[3])
        return out

    eval_env.step_wait = watch  # type: ignore[method-assign]
    evaluate(agent, eval_env, 4, seed=0, deterministic=False)
    assert invalid and not any(invalid)  # unmasked, an untrained MLP picks finished jobs within a few steps


@pytest.mark.slow  # ~25 s of fresh joblib workers and env processes; .ci/run runs it after the default suite
def test_subprocess_envs_work_in_a_local_parallel_sweep(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A local parallel sweep (Hydra's joblib launcher) runs every job to its summary, also with env
    processes: loky's default start method could not restore them (fault 9: `env.vec=subproc` with -m
    crashed every job)."""
    sweep = tmp_path / "sweep"
    res = run_cli(
        "run.py",
        ["-m", "env=cartpole", "env.vec=subproc", "seed=0,1", "preset=smoke", "steps=256", "agent.n_envs=2",
         "agent.hyperparams.n_steps=64", "video.final_episodes=0", "eval.every=256", f"hydra.sweep.dir={sweep}"],
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    runs = sorted(p.parent.name for p in sweep.glob("*/summary.json"))
    assert len(runs) == 2 and all("env.vec=subproc" in name and "steps=256" in name for name in runs), runs
    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    assert sorted(s["seed"] for s in summaries) == [0, 1]
    assert all(s["env"] == "cartpole" and s["steps"] == 256 for s in summaries)
