"""MBPO (issue 21): model rollouts, the mixed real / model minibatches, exact resume, refusals, learning."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from agents.model_based.mbpo import MBPO
from envs.cards import card as envs_card
from envs.errors import ConfigError
from experiments.builders import build_envs
from rewards.base import RewardProvider, TransitionBatch
from tests.helpers import FramesReward, TrainLog, agent_on_env

torch.set_num_threads(1)

#: MBPO at sizes that train in about a second
TINY = [
    "agent.hidden=[16,16]", "agent.ensemble_size=3", "agent.model_elites=2", "agent.learning_starts=20",
    "agent.model_train_freq=20", "agent.epochs=5", "agent.model_batch_size=32", "agent.batch_size=32",
    "agent.net_arch=[32,32]", "agent.utd=2", "agent.rollout_batch_size=50", "agent.buffer_size=1000",
    "agent.log_every=10",
]  # fmt: skip


def _mbpo(*overrides: str, seed: int = 0, env: str = "pendulum", card: Any = None) -> tuple[MBPO, Any]:
    agent, venv = agent_on_env([f"env={env}", "agent=mbpo", *overrides], seed, card)
    assert isinstance(agent, MBPO)
    return agent, venv


def _pendulum_reward(obs: np.ndarray, action: np.ndarray) -> np.ndarray:
    """Gymnasium's Pendulum-v1 reward, written independently: ``-(theta^2 + 0.1 thdot^2 + 0.001 u^2)``."""
    theta = np.arctan2(obs[:, 1], obs[:, 0])
    u = np.clip(action[:, 0], -2.0, 2.0)
    return -(theta**2 + 0.1 * obs[:, 2] ** 2 + 0.001 * u**2)


def _real_obs(agent: MBPO) -> np.ndarray:
    return agent.real.observations[: agent.real.pos, 0]


def test_model_rollouts_branch_from_real_states_with_the_providers_reward() -> None:
    agent, _ = _mbpo(*TINY)
    agent.train(30, TrainLog())  # a model fit at step 20, then rollouts
    assert agent.model.fitted and agent.model_buffer.size == 50
    buf = agent.model_buffer
    real = _real_obs(agent)
    # every branch starts at a real state (rollout_length 1: every stored s is real)
    assert (np.abs(buf.obs[: buf.size, None, :] - real[None]).max(-1).min(-1) == 0).all()
    actions = agent.sac.policy.unscale_action(buf.action[: buf.size])  # stored scaled to [-1, 1]
    np.testing.assert_allclose(
        buf.reward[: buf.size], _pendulum_reward(buf.obs[: buf.size], actions), rtol=1e-5, atol=1e-5
    )
    assert not buf.done[: buf.size].any()  # pendulum never terminates
    assert not np.allclose(buf.next_obs[: buf.size], buf.obs[: buf.size])  # the model moved the states
    agent.close()


@pytest.mark.parametrize("name,plan", [("mbpo", []), ("coplanner", ["agent.plan_horizon=2", "agent.plan_candidates=2"])])
def test_an_env_with_float64_observations_trains_past_the_first_rollouts(name: str, plan: list[str]) -> None:
    """InvertedPendulum-v5 observes float64 (the replay buffer keeps that dtype; the model is float32)."""
    agent, venv = agent_on_env(["env=inverted-pendulum", f"agent={name}", *TINY, *plan])
    assert venv.observation_space.dtype == np.float64
    agent.train(45, TrainLog())  # model fits at steps 20 and 40, each followed by rollouts and SAC updates
    assert agent.model_buffer.size > 0 and np.isfinite(agent.model_buffer.obs[: agent.model_buffer.size]).all()
    agent.close()


def test_model_rollouts_stop_at_termination() -> None:
    """Length-3 branches under a termination rule: a branch continues exactly from its non-terminal ends."""

    def fast(obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return next_obs[:, 2] > 0.0  # ends when the model says the pendulum turns one way

    card = dataclasses.replace(envs_card("rewardlab/Pendulum-v1"), termination_fn=fast)
    agent, _ = _mbpo(*TINY, "agent.rollout_length=3", "agent.rollout_batch_size=200", card=card)
    agent.train(21, TrainLog())
    buf = agent.model_buffer
    n, obs, nxt, done = buf.size, buf.obs[: buf.size], buf.next_obs[: buf.size], buf.done[: buf.size] > 0
    np.testing.assert_array_equal(done, nxt[:, 2] > 0.0)
    assert 0 < done.sum() < n
    # rows are written step by step: 200 starts, then one row per branch still alive
    first = 200
    second = int((~done[:first]).sum())
    assert n == first + second + int((~done[first : first + second]).sum())
    np.testing.assert_array_equal(obs[first : first + second], nxt[:first][~done[:first]])
    agent.close()


def _marked_buffers(real_ratio: float) -> MBPO:
    """An agent whose real rewards are 0 and model rewards 1, so a sample's mean reward is its model share."""
    agent, _ = _mbpo(*TINY, f"agent.real_ratio={real_ratio}")
    agent.train(15, TrainLog())  # random steps only
    agent.real.rewards[: agent.real.pos] = 0.0
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(100, 3)).astype(np.float32)
    agent.model_buffer.add(
        obs, np.zeros((100, 1), np.float32), obs, np.ones(100, np.float32), np.zeros(100, np.float32)
    )
    return agent


@pytest.mark.parametrize("real_ratio", [0.05, 0.5])
def test_mixed_minibatches_honour_real_ratio(real_ratio: float) -> None:
    agent = _marked_buffers(real_ratio)
    shares = [1.0 - float(agent.real.sample(64).rewards.mean()) for _ in range(500)]
    assert abs(np.mean(shares) - real_ratio) < 0.01, np.mean(shares)
    assert agent.real.sample(7).observations.shape == (7, 3)
    agent.model_buffer.size = 0  # no model data yet: real rows only
    assert float(agent.real.sample(64).rewards.mean()) == 0.0
    agent.close()


def test_sac_updates_draw_their_minibatches_from_the_mixed_buffer() -> None:
    agent, _ = _mbpo(*TINY)
    agent.train(25, TrainLog())
    assert agent.sac.replay_buffer is agent.real and agent.sac._n_updates == 2 * 5
    agent.close()


def test_mbpo_logs_model_and_sac_losses() -> None:
    agent, _ = _mbpo(*TINY)
    log = TrainLog()
    agent.train(45, log)
    keys = set().union(*log.rows)
    assert {"loss_model_nll", "loss_model_val_mse", "loss_actor", "loss_critic", "model_rollout_transitions"} <= keys
    agent.close()


def test_a_resumed_mbpo_continues_exactly_as_the_uninterrupted_one(tmp_path: Path) -> None:
    agent, venv = _mbpo(*TINY)
    agent.train(35, TrainLog())
    agent.save(tmp_path / "ckpt")
    fresh, fresh_venv = _mbpo(*TINY, seed=5)
    fresh.load(tmp_path / "ckpt")
    assert fresh.num_steps == 35
    assert fresh.real.real_size() == agent.real.real_size() and fresh.model_buffer.size == agent.model_buffer.size
    obs = np.array([[0.6, 0.8, -1.0], [1.0, 0.0, 0.0]], np.float32)
    np.testing.assert_array_equal(fresh.act(obs), agent.act(obs))
    np.testing.assert_array_equal(fresh.act(obs, deterministic=False), agent.act(obs, deterministic=False))
    for a, v in ((agent, venv), (fresh, fresh_venv)):  # both start a new episode from the same state
        v.seed(11)
        a._obs = None
        a.train(70, TrainLog())  # collection, a model fit, rollouts and SAC updates after the resume
    np.testing.assert_array_equal(agent.real.actions[:70], fresh.real.actions[:70])
    np.testing.assert_array_equal(agent.model_buffer.arrays()["obs"], fresh.model_buffer.arrays()["obs"])
    assert agent.model_buffer.size == fresh.model_buffer.size
    for x, y in zip(agent.sac.policy.state_dict().values(), fresh.sac.policy.state_dict().values(), strict=True):
        torch.testing.assert_close(x, y)
    torch.testing.assert_close(agent.sac.log_ent_coef, fresh.sac.log_ent_coef)
    agent.close()
    fresh.close()


class _Speed(RewardProvider):
    """A numpy-only reward (the angular velocity), as reward code through the sandbox would be."""

    def reward(self, batch: TransitionBatch) -> np.ndarray:
        return np.asarray(batch.obs[:, 2], np.float32)


def test_relabel_recomputes_real_and_model_rewards() -> None:
    agent, _ = _mbpo(*TINY)
    agent.train(30, TrainLog())
    agent.relabel(_Speed())
    real, buf = agent.real, agent.model_buffer
    np.testing.assert_allclose(real.rewards[: real.pos, 0], real.observations[: real.pos, 0, 2])
    assert buf.size == 50
    np.testing.assert_allclose(buf.reward[: buf.size], buf.obs[: buf.size, 2])
    agent.close()


def test_model_buffer_keeps_the_newest_rows_in_a_ring() -> None:
    from agents.model_based.mbpo import ModelBuffer

    buf = ModelBuffer(5, 1, 1)
    for start in (0, 3, 6):
        x = np.arange(start, start + 3, dtype=np.float32)[:, None]
        buf.add(x, x, x, x[:, 0], np.zeros(3, np.float32))
    assert buf.size == 5 and sorted(buf.obs[:, 0].tolist()) == [4, 5, 6, 7, 8]
    buf.add(
        np.arange(7, dtype=np.float32)[:, None], *(np.zeros((7, 1), np.float32),) * 2, *(np.zeros(7, np.float32),) * 2
    )
    assert sorted(buf.obs[:, 0].tolist()) == [2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["agent.utd=0"], r"agent\.utd=0 must be a positive integer"),
        (["agent.rollout_batch_size=0"], r"agent\.rollout_batch_size=0 must be a positive integer"),
        (["agent.real_ratio=1.5"], r"agent\.real_ratio=1\.5 must be in \[0, 1\]"),
        (["agent.model_elites=9"], r"model_elites=9 must not exceed"),
        (["agent.rollout_schedule=[100,10,1,5]"], r"rollout_schedule=.*end_step > start_step"),
    ],
)
def test_mbpo_refuses_a_bad_config(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _mbpo(*TINY, *overrides)


def test_mbpo_refuses_an_env_without_a_termination_function() -> None:
    card = dataclasses.replace(envs_card("rewardlab/Pendulum-v1"), termination_fn=None)
    with pytest.raises(ConfigError, match=r"agent=mbpo needs the env's termination function"):
        _mbpo(*TINY, card=card)


def test_mbpo_refuses_a_reward_on_frames() -> None:
    agent, venv = _mbpo(*TINY)
    with pytest.raises(ConfigError, match=r"agent=mbpo plans through a learned model.*scores rendered frames"):
        MBPO(venv, FramesReward(), envs_card("rewardlab/Pendulum-v1"))
    agent.close()


def test_mbpo_refuses_through_the_runner_with_exit_2(run_cli: Any, tmp_path: Path) -> None:
    for overrides, message in (
        (["env=cartpole"], "Box action space"),
        (["agent.real_ratio=-0.1"], "real_ratio=-0.1 must be in [0, 1]"),
        (["steps=100"], "steps=100 gives MBPO no update"),
    ):
        run = tmp_path / "run"
        res = run_cli("run.py", ["agent=mbpo", "env=pendulum", *overrides, f"hydra.run.dir={run}"])
        assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) <= 2, res.stderr
        assert not run.exists()


def test_schedule_grows_the_rollout_length_linearly() -> None:
    agent, _ = _mbpo(*TINY, "agent.rollout_schedule=[100,300,1,5]")
    for step, k in ((0, 1), (100, 1), (200, 3), (300, 5), (900, 5)):
        agent._steps = step
        assert agent.current_rollout_length() == k
    assert agent.model_buffer.capacity == 1000 // 20 * 50 * 5
    agent.close()


@pytest.mark.slow
def test_mbpo_learns_pendulum_within_3000_steps() -> None:
    """Random: about -1200; the true return after 3000 env steps must clear -600 (tuned/mbpo/pendulum.yaml)."""
    agent, _ = _mbpo()
    agent.train(3000, TrainLog())
    eval_env = build_envs({"id": "rewardlab/Pendulum-v1"}, 4, 0, agent.reward_fn.provider, stream="eval")
    obs: Any = eval_env.reset()
    returns, done = np.zeros(4), np.zeros(4, bool)
    while not done.all():
        obs, _, dones, infos = eval_env.step(agent.act(obs))
        returns += np.where(done, 0.0, [i["true_reward"] for i in infos])
        done |= dones
    assert returns.mean() > -600, returns
