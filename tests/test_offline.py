"""Offline RL: Minari datasets collected and relabelled locally, IQL and BC, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from agents.offline.bc import BC
from agents.offline.iql import IQL, expectile_loss
from envs import data as ds
from envs.cards import card, numpy_fn
from envs.errors import ConfigError
from experiments import collect, relabel
from rewards.env import EnvReward
from tests.helpers import offline_agent, reward_venv

SMALL = ["agent.hidden=[64,64]", "agent.batch_size=128"]
pendulum_reward = numpy_fn(card("rewardlab/Pendulum-v1").reward_fn)


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "datasets"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(path))
    return path


class _Quiet:
    def on_step(self, n: int) -> bool:
        return True

    def on_log(self, n: int, values: object) -> None:
        pass


def test_collect_records_true_rewards_and_episode_structure(root: Path) -> None:
    out = collect.main(["env=pendulum", "policy=random", "episodes=5", "name=local/pendulum/random-v0", "n_envs=2"])
    assert out["episodes"] == 5 and out["steps"] == 5 * 200
    data = ds.load("local/pendulum/random-v0")
    assert len(data) == 1000 and data.num_episodes == 5 and data.observations.shape == (1005, 3)
    # every stored reward is the env's reward of (s, a, s'), s' being the next stored observation
    idx = np.arange(len(data))
    expected = pendulum_reward(data.observations[data.obs_index], data.actions, data.next_observations(idx))
    np.testing.assert_allclose(data.true_rewards, expected, rtol=1e-4, atol=1e-4)
    assert not data.terminations.any()  # Pendulum never terminates: episodes end by truncation only
    assert data.truncations.sum() == 5 and data.truncations[data.episode_starts[1:] - 1].all()
    lo, hi = data.reference_scores
    assert lo == pytest.approx(out["return_mean"]) and hi is None  # random data is its own random reference
    assert ds.list_datasets() == ["local/pendulum/random-v0"]
    import minari  # the dataset is an ordinary Minari dataset

    assert minari.load_dataset("local/pendulum/random-v0").total_steps == 1000


def test_relabel_keeps_true_reward_beside_proxy(root: Path) -> None:
    collect.main(["env=pendulum", "policy=random", "episodes=3", "name=local/pendulum/random-v0"])
    relabel.main(["dataset=local/pendulum/random-v0", "reward=fn", "reward.target=rewards.examples:pendulum_upright"])
    src, new = ds.load("local/pendulum/random-v0"), ds.load("local/pendulum/random-fn-v0")
    from rewards.examples import pendulum_upright

    idx = np.arange(len(src))
    proxy = pendulum_upright(src.observations[src.obs_index], src.actions, src.next_observations(idx))
    proxy = proxy[0] if isinstance(proxy, tuple) else proxy
    np.testing.assert_allclose(new.rewards, proxy, rtol=1e-5, atol=1e-6)  # stored rewards: the proxy
    np.testing.assert_array_equal(new.true_rewards, src.true_rewards)  # the true reward kept beside it
    assert not np.allclose(new.rewards, new.true_rewards)
    labels = new.metadata[ds.META]["labels"]
    assert labels["provider"] == "FnReward" and labels["source"] == "local/pendulum/random-v0"


def test_missing_dataset_lists_local_ones_and_space_mismatch_prints_both(root: Path) -> None:
    collect.main(["env=pendulum", "policy=random", "episodes=2", "name=local/pendulum/random-v0"])
    with pytest.raises(ConfigError, match=r"'local/nope-v0' not found.*local datasets: local/pendulum/random-v0"):
        ds.load("local/nope-v0")
    env = reward_venv("cartpole", EnvReward())
    with pytest.raises(ConfigError, match=r"observation space is Box\(.*\(3,\).*the env's is Box\(.*\(4,\)"):
        offline_agent(IQL, env, dataset="local/pendulum/random-v0")
    with pytest.raises(ConfigError, match=r"give dataset=<id>; local datasets .*local/pendulum/random-v0"):
        offline_agent(BC, env)
    env.close()


def test_corrupted_dataset_is_refused_not_partly_loaded(root: Path) -> None:
    collect.main(["env=pendulum", "policy=random", "episodes=4", "name=local/pendulum/random-v0"])
    file = ds.dataset_path("local/pendulum/random-v0") / "data" / "main_data.hdf5"
    raw = file.read_bytes()
    file.write_bytes(raw[: len(raw) // 2])  # cut short, as by a crash or a full disk
    with pytest.raises(ConfigError, match=r"cannot be read completely.*delete it and collect it again"):
        ds.load("local/pendulum/random-v0")
    meta = file.parent / "metadata.json"
    meta.write_text("{not json")
    with pytest.raises(ConfigError, match="corrupted"):
        ds.load("local/pendulum/random-v0")


def test_write_is_atomic_and_refuses_to_overwrite(root: Path) -> None:
    collect.main(["env=pendulum", "policy=random", "episodes=1", "name=local/pendulum/random-v0"])
    with pytest.raises(ConfigError, match="already exists"):
        collect.main(["env=pendulum", "policy=random", "episodes=1", "name=local/pendulum/random-v0"])
    assert not [p for p in root.iterdir() if p.name.startswith(".incomplete")]  # staging removed


@pytest.mark.parametrize("tau", [0.5, 0.7, 0.9])
def test_expectile_loss_minimiser_is_the_expectile(tau: float) -> None:
    rng = np.random.default_rng(0)
    x = rng.exponential(size=4000)
    # the tau-expectile solves tau * E[(x - m)+] = (1 - tau) * E[(m - x)+]; bisection, independently
    lo, hi = x.min(), x.max()
    for _ in range(100):
        m = (lo + hi) / 2
        lo, hi = (m, hi) if tau * np.maximum(x - m, 0).mean() > (1 - tau) * np.maximum(m - x, 0).mean() else (lo, m)
    v = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([v], lr=0.05)
    xt = torch.as_tensor(x, dtype=torch.float32)
    for _ in range(1500):
        opt.zero_grad()
        expectile_loss(xt - v, tau).backward()
        opt.step()
    assert float(v.detach()) == pytest.approx(m, abs=0.02)


def test_checkpoint_resume_is_exact(root: Path, tmp_path: Path) -> None:
    collect.main(["env=pendulum", "policy=random", "episodes=2", "name=local/pendulum/random-v0"])
    kw = {"dataset": "local/pendulum/random-v0", "hidden": (32, 32), "batch_size": 64, "max_steps": 60}
    env = reward_venv("pendulum", EnvReward())
    straight = offline_agent(IQL, env, seed=3, **kw)
    straight.train(60, _Quiet())
    first = offline_agent(IQL, env, seed=3, **kw)
    first.train(25, _Quiet())
    first.save(tmp_path / "ckpt")
    resumed = offline_agent(IQL, env, seed=99, **kw)  # another seed: everything must come from the checkpoint
    resumed.load(tmp_path / "ckpt")
    resumed.train(60, _Quiet())
    for name, module in straight.modules.items():
        for (k, a), b in zip(module.state_dict().items(), resumed.modules[name].state_dict().values(), strict=True):
            assert torch.equal(a, b), f"{name}.{k} differs after resume"
    env.close()


def _mixed_cartpole(root: Path) -> None:
    collect.main(
        [
            "env=cartpole",
            "policy=scripted:balance",
            "episodes=4",
            "recipe=expert",
            "name=local/cartpole/expert-v0",
        ]
    )
    collect.main(["env=cartpole", "policy=random", "episodes=150", "recipe=random", "name=local/cartpole/random-v0"])
    collect.main(
        [
            "env=cartpole",
            "recipe=medium-expert",
            "sources=[local/cartpole/random-v0,local/cartpole/expert-v0]",
            "name=local/cartpole/mixed-v0",
        ]
    )


@pytest.mark.slow  # a learning check (~11 s); test_offline_learning.py's expectile tests stay in the default suite
def test_iql_filters_mixed_data_that_bc_imitates(root: Path) -> None:
    """On half expert, half random transitions, BC copies the mixture; IQL's advantage weights keep the expert."""
    _mixed_cartpole(root)
    data = ds.load("local/cartpole/mixed-v0")
    assert data.reference_scores == (pytest.approx(data.reference_scores[0]), 500.0)
    from experiments.evaluation import evaluate

    scores = {}
    for cls, extra in ((BC, {}), (IQL, {"max_steps": 3000})):
        env = reward_venv("cartpole", EnvReward())
        agent = offline_agent(cls, env, seed=0, dataset="local/cartpole/mixed-v0", hidden=(64, 64), batch_size=256, **extra)
        agent.train(3000, _Quiet())
        eval_env = reward_venv("cartpole", EnvReward(), n=4)
        scores[cls.name] = np.mean([e.true_return for e in evaluate(agent, eval_env, 8, seed=123)])
        eval_env.close()
        env.close()
    print(scores)
    assert scores["iql"] >= 450, scores
    assert scores["iql"] > scores["bc"] + 100, scores


def test_medium_replay_reads_a_runs_replay_buffer(root: Path, run_cli: object, tmp_path: Path) -> None:
    run = tmp_path / "sac"
    res = run_cli(  # type: ignore[operator]
        "run.py",
        [
            "env=pendulum",
            "agent=sac",
            "steps=700",
            "agent.hyperparams.learning_starts=600",
            "eval.every=700",
            "eval.episodes=1",
            "eval.final_episodes=1",
            "video.final_episodes=0",
            f"hydra.run.dir={run}",
        ],
    )
    assert res.returncode == 0, res.stderr[-2000:]
    collect.main(
        [
            "env=pendulum",
            "recipe=medium-replay",
            f"policy={run}",
            "name=local/pendulum/medium-replay-v0",
            "ref_episodes=0",
        ]
    )
    data = ds.load("local/pendulum/medium-replay-v0")
    assert len(data) == 600 and data.num_episodes == 3  # 700 steps: 3 finished episodes, the running one dropped
    low, high = data.action_space.low, data.action_space.high
    assert (data.actions >= low).all() and (data.actions <= high).all()
    assert np.abs(data.actions).max() > 1.0  # env-scale torques, not SB3's squashed [-1, 1]
    idx = np.arange(len(data))
    expected = pendulum_reward(data.observations[data.obs_index], data.actions, data.next_observations(idx))
    np.testing.assert_allclose(data.true_rewards, expected, rtol=1e-4, atol=1e-3)  # rewards match (s, a, s')


@pytest.mark.heavy
def test_acceptance_collect_then_iql_writes_the_run_directory(root: Path, run_cli: object, tmp_path: Path) -> None:
    collect.main(["env=pendulum", "policy=random", "episodes=20", "name=local/pendulum/random-v0"])
    run = tmp_path / "iql"
    res = run_cli(  # type: ignore[operator]
        "run.py",
        ["env=pendulum", "agent=iql", "dataset=local/pendulum/random-v0", "steps=2000", *SMALL, f"hydra.run.dir={run}"],
    )
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("config.yaml", "metrics.csv", "train.csv", "summary.json", "videos/final_ep0.mp4"):
        assert (run / name).exists(), name
    assert (run / "checkpoints" / "latest").exists() and list((run / "tensorboard").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["agent"] == "iql" and summary["steps"] == 2000 and summary["eval_episodes"] == 20
    assert summary["agent_info"]["dataset"]["id"] == "local/pendulum/random-v0"
    assert summary["true_return_mean"] == summary["proxy_return_mean"] < 0  # evaluated on the env's reward
    assert summary["best_eval_true_return"] >= summary["true_return_mean"] - 1e-9
    assert "normalized_score" not in summary  # no expert reference for this dataset
    import csv

    rows = list(csv.DictReader((run / "train.csv").open()))
    assert {"loss_value", "loss_critic", "loss_actor"} <= set(rows[0]) and rows[-1]["step"] == "2000"


@pytest.mark.heavy
def test_run_reports_normalised_scores_and_refuses_bad_input(root: Path, run_cli: object, tmp_path: Path) -> None:
    _mixed_cartpole(root)
    run = tmp_path / "bc"
    res = run_cli(  # type: ignore[operator]
        "run.py",
        [
            "env=cartpole",
            "agent=bc",
            "dataset=local/cartpole/expert-v0",
            "steps=600",
            *SMALL,
            "video.final_episodes=0",
            f"hydra.run.dir={run}",
        ],
    )
    assert res.returncode == 0, res.stderr[-3000:]
    s = json.loads((run / "summary.json").read_text())
    lo, hi = s["agent_info"]["dataset"]["ref_min_score"], s["agent_info"]["dataset"]["ref_max_score"]
    assert s["normalized_score"] == pytest.approx(100 * (s["true_return_mean"] - lo) / (hi - lo))
    assert "normalized_score" in (run / "metrics.csv").read_text().splitlines()[0]
    bad = tmp_path / "bad"
    res = run_cli("run.py", ["env=pendulum", "agent=iql", "dataset=local/cartpole/expert-v0", f"hydra.run.dir={bad}"])  # type: ignore[operator]
    assert res.returncode == 2 and "observation space" in res.stderr and not bad.exists()
    res = run_cli("run.py", ["env=cartpole", "agent=iql", f"hydra.run.dir={bad}"])  # type: ignore[operator]
    assert res.returncode == 2 and "give dataset=<id>" in res.stderr and "local/cartpole/expert-v0" in res.stderr
    assert os.environ["MINARI_DATASETS_PATH"] == str(root)


def test_frames_are_collected_and_feed_frame_based_relabelling(root: Path) -> None:
    small = ["env.render.width=32", "env.render.height=24"]
    collect.main(
        ["env=cartpole", "policy=random", "episodes=2", "frames=true", "name=local/cartpole/frames-v0", *small]
    )
    data = ds.load("local/cartpole/frames-v0", extras={"frame"})
    assert data.frames is not None and data.frames.shape == (len(data), 24, 32, 3) and data.frames.dtype == np.uint8
    relabel.main(
        [
            "dataset=local/cartpole/frames-v0",
            "reward=fn",
            "reward.target=tests.helpers:brightness",
            "reward.frames=true",
            *small,
        ]
    )
    new = ds.load("local/cartpole/frames-fn-v0")
    expected = data.frames.reshape(len(data), -1).mean(axis=1) / 255.0
    np.testing.assert_allclose(new.rewards, expected, rtol=1e-5)
    collect.main(["env=cartpole", "policy=random", "episodes=1", "name=local/cartpole/noframes-v0"])
    with pytest.raises(ConfigError, match=r"has no frames.*frames=true"):
        ds.load("local/cartpole/noframes-v0", extras={"frame"})


def test_stored_labels_are_used_only_with_the_provider_that_wrote_them(root: Path) -> None:
    from rewards.fn import FnReward

    collect.main(["env=pendulum", "policy=random", "episodes=2", "name=local/pendulum/random-v0"])
    relabel.main(["dataset=local/pendulum/random-v0", "reward=fn", "reward.target=rewards.examples:pendulum_upright"])
    stored = ds.load("local/pendulum/random-fn-v0").rewards
    kw = {"dataset": "local/pendulum/random-fn-v0", "hidden": (16,), "reward_scale": 1.0}
    env = reward_venv("pendulum", FnReward("rewards.examples:pendulum_upright"))
    agent = offline_agent(IQL, env, labels="stored", **kw)
    np.testing.assert_allclose(agent._rewards.numpy(), stored)
    true_env = reward_venv("pendulum", EnvReward())
    with pytest.raises(ConfigError, match=r"labelled by FnReward.*evaluates the proxy with EnvReward"):
        offline_agent(IQL, true_env, labels="stored", **kw)
    by_provider = offline_agent(IQL, true_env, **kw)  # default: labelled by the run's provider (here the env's reward)
    np.testing.assert_allclose(by_provider._rewards.numpy(), ds.load("local/pendulum/random-v0").true_rewards)


def test_network_initialisation_follows_the_seed_not_the_global_rng(root: Path) -> None:
    collect.main(["env=cartpole", "policy=random", "episodes=2", "name=local/cartpole/random-v0"])
    env = reward_venv("cartpole", EnvReward())
    torch.manual_seed(1)
    state = torch.get_rng_state()
    a = offline_agent(IQL, env, seed=5, dataset="local/cartpole/random-v0", hidden=(16,))
    assert torch.equal(torch.get_rng_state(), state)  # building an agent does not consume the global RNG
    torch.manual_seed(2)
    b = offline_agent(IQL, env, seed=5, dataset="local/cartpole/random-v0", hidden=(16,))
    c = offline_agent(IQL, env, seed=6, dataset="local/cartpole/random-v0", hidden=(16,))
    same = [torch.equal(x, y) for x, y in zip(a.actor.state_dict().values(), b.actor.state_dict().values(), strict=True)]
    other = [torch.equal(x, y) for x, y in zip(a.actor.state_dict().values(), c.actor.state_dict().values(), strict=True)]
    assert all(same) and not all(other)
