"""The online provider on Pendulum, whose reward depends on the state: the learned reward ranks held-out
segments (a constant one could not), PEBBLE's unsupervised pre-training (a k-NN state-entropy reward, relabelled
in the replay buffer as it changes), the teacher calibrated each round, and segments no episode can hold refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agents.sb3 import SB3Agent
from envs.errors import ConfigError
from rewards.preference.provider import PreferenceReward
from rewards.preference.segments import Segments
from rewards.preference.teachers import SyntheticTeacher
from tests.helpers import reward_venv


def _random_steps(venv, steps: int, seed: int = 0) -> list[np.ndarray]:  # type: ignore[no-untyped-def]
    """Step ``venv`` with random actions; returns the observations the steps started from, ``(n_envs, 3)`` each."""
    rng = np.random.default_rng(seed)
    obs = venv.reset()
    seen = []
    for _ in range(steps):
        seen.append(obs.copy())
        obs, *_ = venv.step(rng.uniform(-2, 2, size=(venv.num_envs, 1)).astype(np.float32))
    return seen


def test_the_learned_reward_ranks_held_out_pendulum_segments() -> None:
    """Pendulum's reward, -(theta^2 + 0.1 theta_dot^2 + 0.001 u^2), varies with the state: a constant reward model
    is at chance on the held-out accuracy (0.5), the learned one must rank segments like the true return."""
    torch.manual_seed(0)
    provider = PreferenceReward(
        budget=80, queries=20, every=200, first_after=200, segment=25, held_out=300, epochs=30, seed=0
    )
    venv = reward_venv("pendulum", provider, n=4, observe=True)
    _random_steps(venv, 800)
    assert provider.rounds == 4 and provider.labels_used == 80
    stats = provider.metrics()
    assert stats["reward_model_accuracy"] > 0.85, stats
    assert stats["reward_model_accuracy"] == stats["reward_model_accuracy_all"]  # no episode ends early: all full
    venv.close()


def test_the_teacher_is_calibrated_on_each_rounds_candidates_and_the_first_round_is_uniform() -> None:
    seen: list[Segments] = []

    class Recording(SyntheticTeacher):
        def calibrate(self, segments: Segments) -> None:
            seen.append(segments)
            super().calibrate(segments)

    teacher = Recording(eps_equal=0.05, equal_within=None)
    provider = PreferenceReward(
        teacher=teacher, budget=30, queries=10, candidates=4, every=200, first_after=200, segment=25, held_out=0
    )
    venv = reward_venv("pendulum", provider, n=2, observe=True)
    _random_steps(venv, 600)
    assert provider.rounds == 3
    # first round: 10 uniform pairs (an untrained ensemble's uncertainty means nothing); then 4 candidates a query
    assert [len(s) for s in seen] == [2 * 10, 2 * 40, 2 * 40]
    assert teacher.scale == pytest.approx(float(seen[-1].true_rewards.astype(np.float64).sum(1).mean()))
    assert teacher.scale < 0  # pendulum pays <= 0: equal within 5% of |mean segment return|
    assert "eps_equal=0.05" in provider.pairs.teacher
    venv.close()


# --- PEBBLE's unsupervised pre-training -------------------------------------------------------------------


def _knn(queries: np.ndarray, states: np.ndarray, k: int, exclude_self: bool) -> np.ndarray:
    d = np.sqrt(((queries[:, None, :].astype(np.float64) - states[None, :, :]) ** 2).sum(-1))
    d.sort(1)
    return d[:, k] if exclude_self else d[:, k - 1]  # the state itself is at distance 0


def test_pretraining_pays_the_distance_to_the_kth_nearest_state_seen() -> None:
    provider = PreferenceReward(pretrain_k=3, every=10**9, first_after=10**9, segment=25)
    venv = reward_venv("pendulum", provider, n=2, observe=True)
    seen = np.concatenate(_random_steps(venv, 150))  # 300 states: scale refreshed at 8, 16, ..., 256 states
    assert provider.exploration.used == 300 and provider.version == 6  # each refresh is a change of the reward
    # the scale: std of the k-NN distances (each state's own left out) over the states at the last refresh
    at_refresh = seen[:256]
    scale = _knn(at_refresh, at_refresh, 3, exclude_self=True).std(ddof=1)
    assert provider.exploration.scale == pytest.approx(scale, rel=1e-4)
    rng = np.random.default_rng(1)
    fresh = np.stack([np.cos(rng.uniform(-3, 3, 50)), np.sin(rng.uniform(-3, 3, 50)), rng.uniform(-8, 8, 50)], 1)
    batch = _batch(fresh.astype(np.float32))
    np.testing.assert_allclose(provider.reward(batch), _knn(fresh, seen, 3, False) / scale, rtol=1e-4)
    # novelty pays: states far from everything seen earn more than those among them
    far = _batch(np.array([[5.0, 5.0, 20.0]], np.float32))
    assert provider.reward(far)[0] > 5 * provider.reward(_batch(seen[:50])).mean()
    # differentiable, for planners: the same values from torch
    fn = provider.torch_reward()
    assert fn is not None
    x = torch.tensor(fresh, dtype=torch.float32, requires_grad=True)
    out = fn(x, torch.zeros(50, 1), x)
    out.sum().backward()
    np.testing.assert_allclose(out.detach().numpy(), provider.reward(batch), rtol=1e-5)
    assert x.grad is not None and torch.isfinite(x.grad).all()
    venv.close()


def _batch(obs: np.ndarray):  # type: ignore[no-untyped-def]
    from rewards.base import TransitionBatch

    n = len(obs)
    return TransitionBatch(
        obs=obs, action=np.zeros((n, 1), np.float32), next_obs=obs, env_reward=np.zeros(n, np.float32),
        terminated=np.zeros(n, bool), truncated=np.zeros(n, bool),
    )


def test_sacs_buffer_holds_the_current_exploration_reward_then_the_learned_one(tmp_path: Path) -> None:
    provider = PreferenceReward(budget=20, queries=20, every=10**9, first_after=700, segment=25, held_out=0, epochs=5)
    venv = reward_venv("pendulum", provider, observe=True)
    agent = SB3Agent("SAC", venv, reward=provider, seed=0, device="cpu", hyperparams={"learning_starts": 10**6})

    class Relabelling:  # what the runner does after every step
        version = 0

        def on_step(self, n: int) -> bool:
            if provider.version != self.version:
                agent.relabel(provider)
                self.version = provider.version
            return True

        def on_log(self, n: int, values: object) -> None:
            pass

    agent.train(600, Relabelling())
    buffer = agent.model.replay_buffer
    states = buffer.observations[:600, 0]
    assert provider.rounds == 0 and provider.version == 6  # refreshed at 12, 24, ..., 384 states
    # rewards as of the last refresh (384 states), each state's own distance left out, with that refresh's scale;
    # the step that triggered it reaches the buffer after the relabelling (SB3 stores it after the callback)
    at_refresh = _knn(states[:384], states[:384], 5, exclude_self=True)
    np.testing.assert_allclose(buffer.rewards[:383, 0], at_refresh[:383] / at_refresh.std(ddof=1), rtol=1e-4)
    assert np.all(buffer.rewards[:600, 0] > 0)

    provider.save(tmp_path / "reward")  # mid pre-training: the states travel with the checkpoint
    again = PreferenceReward(budget=20, queries=20, every=10**9, first_after=700, segment=25, held_out=0, epochs=5)
    again.bind(venv.observation_space, venv.action_space)
    again.load(tmp_path / "reward")
    probe = _batch(states[:40])
    np.testing.assert_allclose(again.reward(probe), provider.reward(probe), rtol=1e-6)

    agent.train(800, Relabelling())  # the first round at 700 steps: the learned reward replaces it
    assert provider.rounds == 1 and provider.exploration.used == 0
    act = agent.model.policy.unscale_action(buffer.actions[:800, 0])
    learned = provider.model.predict(buffer.observations[:800, 0], act)
    fresh = np.arange(800) != 699  # the round's own step reached the buffer after the relabelling (as above)
    np.testing.assert_allclose(buffer.rewards[:800, 0][fresh], learned[fresh], rtol=1e-5, atol=1e-6)
    venv.close()


def test_pretraining_is_on_by_default_with_pebbles_k() -> None:
    """``reward=preference`` is PEBBLE with SAC (PrefPPO with PPO): state-entropy pre-training, k = 5 (PEBBLE's topK);
    a preference file (offline, learned at once) has nothing to pre-train for."""
    from experiments.builders import build_reward
    from experiments.cli import check_composes

    provider = build_reward(check_composes(["env=pendulum", "agent=sac", "reward=preference"]).reward)
    assert provider.pretrain and provider.exploration.k == 5
    assert not PreferenceReward(pairs="prefs.npz").pretrain


def test_without_pretraining_the_reward_is_zero_before_the_first_round() -> None:
    provider = PreferenceReward(pretrain=False, every=10**9, first_after=10**9)
    venv = reward_venv("pendulum", provider, observe=True)
    _random_steps(venv, 50)
    assert provider.version == 0 and not provider.reward(_batch(np.ones((3, 3), np.float32))).any()
    venv.close()


# --- segments no episode can hold ----------------------------------------------------------------------------


def test_a_segment_longer_than_the_time_limit_is_refused() -> None:
    provider = PreferenceReward(segment=250)
    with pytest.raises(ConfigError, match=r"reward\.segment=250 .*longest possible episode \(200 steps.*<= 200"):
        provider.check_horizon(200)
    provider.check_horizon(None)  # no time limit known: nothing to check
    PreferenceReward(segment=200).check_horizon(200)  # one window per full episode
    PreferenceReward(segment=250, pairs="prefs.npz").check_horizon(200)  # a preference file: no segments cut here


def test_the_run_refuses_a_segment_longer_than_any_episode_before_it_starts(run_cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res = run_cli(
        "run.py",
        [
            "env=pendulum",
            "agent=sac",
            "reward=preference",
            "reward.segment=250",
            "steps=100",
            "eval.episodes=1",
            "eval.final_episodes=1",
            "video.final_episodes=0",
            "hydra.run.dir=run",
        ],
    )
    assert res.returncode == 2 and "longest possible episode (200 steps" in res.stderr, res.stderr[-2000:]
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()
