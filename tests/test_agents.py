"""stable-baselines3 adapters: exact budgets, losses reported, config translation, save/load."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agents.sb3 import SB3Agent
from envs.errors import ConfigError
from envs.make import make_vec_env
from rewards.env import EnvReward
from rewards.wrapper import RewardVecEnv

CARTPOLE = {"name": "cartpole", "id": "rewardlab/CartPole-v1"}
PENDULUM = {"name": "pendulum", "id": "rewardlab/Pendulum-v1"}


class Callback:
    def __init__(self, stop_at: int | None = None) -> None:
        self.steps: list[int] = []
        self.logs: list[tuple[int, dict[str, float]]] = []
        self.stop_at = stop_at

    def on_step(self, num_steps: int) -> bool:
        self.steps.append(num_steps)
        return self.stop_at is None or num_steps < self.stop_at

    def on_log(self, num_steps: int, values: Mapping[str, float]) -> None:
        self.logs.append((num_steps, dict(values)))


def _env(cfg: dict, n: int, seed: int = 0) -> RewardVecEnv:
    return RewardVecEnv(make_vec_env(cfg, n, seed), EnvReward())


def _agent(algo: str, cfg: dict, n: int, **kwargs: Any) -> SB3Agent:
    return SB3Agent(algo, _env(cfg, n), seed=0, device="cpu", **kwargs)


@pytest.mark.parametrize(
    "algo,cfg,n_envs,hyperparams,budget,loss",
    [
        ("PPO", CARTPOLE, 2, {"n_steps": 16, "batch_size": 16, "n_epochs": 1}, 100, "loss_value"),
        ("A2C", CARTPOLE, 2, {"n_steps": 5}, 100, "loss_value"),
        ("DQN", CARTPOLE, 1, {"learning_starts": 20, "train_freq": 4}, 90, "loss"),
        ("SAC", PENDULUM, 1, {"learning_starts": 20, "batch_size": 32}, 90, "loss_critic"),
        ("TD3", PENDULUM, 1, {"learning_starts": 20, "batch_size": 32}, 90, "loss_critic"),
    ],
)
def test_trains_exactly_to_the_budget_and_reports_losses(
    algo: str, cfg: dict, n_envs: int, hyperparams: dict, budget: int, loss: str
) -> None:
    agent = _agent(algo, cfg, n_envs, hyperparams=hyperparams)
    cb = Callback()
    agent.train(budget, cb)
    assert agent.num_steps == budget
    assert cb.steps[-1] == budget and cb.steps == sorted(cb.steps)
    assert any(loss in values for _, values in cb.logs), cb.logs
    assert all(k.startswith(("loss", "train_")) for _, v in cb.logs for k in v)
    actions = agent.act(np.stack([agent.raw_env.observation_space.sample()] * 3))
    assert len(actions) == 3
    agent.train(budget, cb)  # a second call with the same total does nothing
    assert agent.num_steps == budget
    agent.close()


def test_ppo_trains_on_the_last_full_rollout_at_the_budget() -> None:
    agent = _agent("PPO", CARTPOLE, 2, hyperparams={"n_steps": 16, "batch_size": 32, "n_epochs": 1})
    cb = Callback()
    agent.train(64, cb)  # exactly two rollouts of 16 x 2 steps
    n_updates = [v["train_n_updates"] for _, v in cb.logs if "train_n_updates" in v]
    assert agent.num_steps == 64 and n_updates[-1] == 2  # both rollouts trained on
    agent.close()


def test_callback_false_stops_training() -> None:
    agent = _agent("PPO", CARTPOLE, 2, hyperparams={"n_steps": 16, "batch_size": 16, "n_epochs": 1})
    agent.train(1000, Callback(stop_at=40))
    assert agent.num_steps == 40
    agent.close()


def test_config_translation() -> None:
    agent = _agent(
        "PPO",
        CARTPOLE,
        1,
        hyperparams={"learning_rate": "lin_0.001", "clip_range": "lin_0.2", "n_steps": 8, "batch_size": 8},
        policy_kwargs={"activation_fn": "relu", "net_arch": [8]},
    )
    assert agent.model.lr_schedule(1.0) == pytest.approx(1e-3) and agent.model.lr_schedule(0.5) == pytest.approx(5e-4)
    assert agent.model.clip_range(0.25) == pytest.approx(0.05)
    import torch

    assert agent.model.policy.activation_fn is torch.nn.ReLU
    agent.close()
    td3 = _agent("TD3", PENDULUM, 1, action_noise={"type": "normal", "std": 0.3})
    assert np.allclose(td3.model.action_noise._sigma, 0.3)
    td3.close()


@pytest.mark.parametrize(
    "algo,cfg,kwargs,message",
    [
        ("SAC", CARTPOLE, {}, "SAC needs a Box action space"),
        ("DQN", PENDULUM, {}, "DQN needs a Discrete action space"),
        ("PPO", CARTPOLE, {"hyperparams": {"lerning_rate": 1e-3}}, r"does not take lerning_rate \(did you mean learning_rate\?\); accepted"),
        ("PPO", CARTPOLE, {"hyperparams": {"learning_rate": "lin_x"}}, "must be a number or lin_<number>"),
        ("PPO", CARTPOLE, {"policy_kwargs": {"activation_fn": "swish2"}}, "activation_fn"),
        ("TD3", PENDULUM, {"action_noise": {"type": "pink"}}, "action_noise.type"),
        ("PPO2", CARTPOLE, {}, "agent.algo"),
    ],
)
def test_bad_agent_configs_are_config_errors(algo: str, cfg: dict, kwargs: dict, message: str) -> None:
    env = _env(cfg, 1)
    with pytest.raises(ConfigError, match=message):
        SB3Agent(algo, env, **kwargs)
    env.close()


def test_save_load_restores_policy_normalisation_and_replay_buffer(tmp_path: Path) -> None:
    agent = _agent("SAC", PENDULUM, 1, hyperparams={"learning_starts": 10, "batch_size": 16}, normalize_obs=True)
    agent.train(60, Callback())
    agent.save(tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"model.zip", "vecnormalize.pkl", "replay_buffer.npz"}
    fresh = _agent("SAC", PENDULUM, 1, hyperparams={"learning_starts": 10, "batch_size": 16}, normalize_obs=True)
    fresh.load(tmp_path / "ckpt")
    obs = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_allclose(fresh.act(obs), agent.act(obs), atol=1e-6)
    np.testing.assert_allclose(fresh.vecnorm.obs_rms.mean, agent.vecnorm.obs_rms.mean)
    old, new = agent.model.replay_buffer, fresh.model.replay_buffer
    assert (new.pos, new.full) == (old.pos, old.full) == (60, False)
    np.testing.assert_array_equal(new.observations[:60], old.observations[:60])
    np.testing.assert_array_equal(new.actions[:60], old.actions[:60])
    assert fresh.num_steps == 60
    fresh.train(80, Callback())  # continues from the restored state
    assert fresh.num_steps == 80 and fresh.model.replay_buffer.pos == 80
    agent.close()
    fresh.close()


def test_replay_buffer_checkpoint_is_compact(tmp_path: Path) -> None:
    agent = _agent("SAC", PENDULUM, 1, hyperparams={"learning_starts": 10, "batch_size": 16, "buffer_size": 1_000_000})
    agent.train(50, Callback())
    agent.save(tmp_path / "ckpt")
    size = (tmp_path / "ckpt" / "replay_buffer.npz").stat().st_size
    assert size < 50_000  # 50 transitions, not a million rows of zeros
    agent.close()


def test_ppo_learns_cartpole() -> None:
    """A learning curve that must rise: RL-Zoo's tuned PPO on CartPole, 12k steps, seconds on a CPU.

    Evaluated with sampled actions: a freshly initialised *greedy* policy can balance the pole by
    chance (seed 0 scores ~400), a sampled one cannot (~20, like random actions).
    """
    from experiments.evaluation import evaluate, summarize

    env = _env(CARTPOLE, 8)
    hp = {"n_steps": 32, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20,
          "learning_rate": "lin_0.001", "clip_range": "lin_0.2"}  # fmt: skip
    agent = SB3Agent("PPO", env, seed=0, device="cpu", hyperparams=hp)
    eval_env = _env(CARTPOLE, 4, seed=100)
    before = summarize(evaluate(agent, eval_env, 8, seed=100, deterministic=False))["true_return"]
    agent.train(16_000, Callback())
    after = summarize(evaluate(agent, eval_env, 8, seed=100, deterministic=False))["true_return"]
    assert after > 120 and after > 4 * before, (before, after)  # 16k steps, seeds 0-4: 134, 124, 444, 244, 57 (deterministic per seed; 12k left seed 0 at 107)
    agent.close()
    eval_env.close()
