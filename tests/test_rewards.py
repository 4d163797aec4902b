"""Reward providers and the reward wrapper: true reward kept, proxy swapped in, batches right."""

from __future__ import annotations

import numpy as np
import pytest

from envs.errors import ConfigError
from envs.make import make_vec_env
from rewards.base import RewardProvider, TransitionBatch
from rewards.env import EnvReward
from rewards.fn import FnReward
from rewards.wrapper import RewardVecEnv

CARTPOLE = {"name": "cartpole", "id": "rewardlab/CartPole-v1", "render": {"width": 96, "height": 64}}
PENDULUM = {"name": "pendulum", "id": "rewardlab/Pendulum-v1", "max_episode_steps": 20}


class Recorder(RewardProvider):
    """Records every batch; returns minus the env reward (a proxy that differs from the truth)."""

    def __init__(self, needs_frames: bool = False) -> None:
        self.needs = frozenset({"frame"}) if needs_frames else frozenset()
        self.batches: list[TransitionBatch] = []

    def reward(self, batch: TransitionBatch) -> np.ndarray:
        self.batches.append(batch)
        return -batch.env_reward


def _rollout(venv: RewardVecEnv, steps: int, rng: np.random.Generator) -> list[tuple]:
    out = []
    obs = venv.reset()
    for _ in range(steps):
        actions = np.array([venv.action_space.sample() for _ in range(venv.num_envs)])
        next_obs, reward, dones, infos = venv.step(actions)
        out.append((obs, actions, next_obs, reward, dones, infos))
        obs = next_obs
    return out


def test_wrapper_swaps_in_the_proxy_and_keeps_the_true_reward() -> None:
    provider = Recorder()
    venv = RewardVecEnv(make_vec_env(CARTPOLE, 3, seed=0), provider)
    venv.action_space.seed(0)
    steps = _rollout(venv, 60, np.random.default_rng(0))
    for (obs, actions, next_obs, reward, dones, infos), batch in zip(steps, provider.batches, strict=True):
        true = np.array([info["true_reward"] for info in infos], dtype=np.float32)
        np.testing.assert_array_equal(reward, -true)  # the agent sees the proxy
        np.testing.assert_array_equal(batch.env_reward, true)
        np.testing.assert_array_equal(batch.obs, obs)
        np.testing.assert_array_equal(batch.action, actions)
        for i in range(3):
            expected = infos[i]["terminal_observation"] if dones[i] else next_obs[i]
            np.testing.assert_array_equal(batch.next_obs[i], expected)  # real terminal state, not the reset one
    episodes = venv.pop_episodes()
    assert episodes and all(e.proxy_return == -e.true_return and e.true_return == e.length for e in episodes)
    assert venv.pop_episodes() == []
    venv.close()


def test_terminated_and_truncated_stay_apart() -> None:
    provider = Recorder()
    venv = RewardVecEnv(make_vec_env(PENDULUM, 2, seed=0), provider)  # Pendulum only ever truncates
    _rollout(venv, 20, np.random.default_rng(0))
    last = provider.batches[-1]
    assert last.truncated.all() and not last.terminated.any()
    assert not any(b.truncated.any() for b in provider.batches[:-1])
    venv.close()

    provider = Recorder()
    venv = RewardVecEnv(make_vec_env(CARTPOLE, 1, seed=0), provider)  # CartPole falls: terminated
    venv.reset()
    for _ in range(100):
        _, _, dones, _ = venv.step(np.array([1]))
        if dones.any():
            break
    assert provider.batches[-1].terminated.all() and not provider.batches[-1].truncated.any()
    venv.close()


def test_env_reward_equals_the_true_reward() -> None:
    venv = RewardVecEnv(make_vec_env(PENDULUM, 2, seed=1), EnvReward())
    venv.reset()
    for _ in range(5):
        _, reward, _, infos = venv.step(np.zeros((2, 1), dtype=np.float32))
        np.testing.assert_allclose(reward, [info["true_reward"] for info in infos])
    venv.close()


def test_frames_are_batched_for_frame_based_providers() -> None:
    provider = Recorder(needs_frames=True)
    venv = RewardVecEnv(make_vec_env(CARTPOLE, 2, seed=0, extras={"frame"}), provider)
    _rollout(venv, 3, np.random.default_rng(0))
    assert all(b.frames is not None and b.frames.shape == (2, 64, 96, 3) and b.frames.dtype == np.uint8 for b in provider.batches)
    venv.close()


def test_fn_reward_calls_the_target_batched() -> None:
    provider = FnReward(target="rewards.examples:cartpole_upright")
    obs = np.array([[0.0, 0.0, 0.0, 0.0], [2.4, 0.0, 0.2095, 0.0]], dtype=np.float32)
    batch = TransitionBatch(obs, np.array([0, 1]), obs, np.ones(2, np.float32), np.zeros(2, bool), np.zeros(2, bool))
    np.testing.assert_allclose(provider.reward(batch), [1.0, 0.0], atol=1e-3)
    assert set(provider.last_components) == {"upright", "centered"}


@pytest.mark.parametrize(
    "target,message",
    [
        (None, "needs reward.target"),
        ("rewards.examples.cartpole_upright", "must look like"),
        ("no_such_module_xyz:f", "cannot import module"),
        ("rewards.examples:nope", "has no attribute"),
        ("tests.helpers:NOT_CALLABLE", "not callable"),
    ],
)
def test_fn_reward_bad_targets_are_config_errors(target: str | None, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FnReward(target=target)


@pytest.mark.parametrize("target,message", [("tests.helpers:wrong_shape", "shape"), ("tests.helpers:nan_reward", "non-finite")])
def test_fn_reward_bad_outputs_are_config_errors(target: str, message: str) -> None:
    venv = RewardVecEnv(make_vec_env(CARTPOLE, 2, seed=0), FnReward(target=target))
    venv.reset()
    with pytest.raises(ConfigError, match=message):
        venv.step(np.array([0, 1]))
    venv.close()


def test_frame_based_fn_reward_in_the_wrapper() -> None:
    provider = FnReward(target="tests.helpers:brightness", frames=True)
    venv = RewardVecEnv(make_vec_env(CARTPOLE, 2, seed=0, extras=provider.needs), provider)
    venv.reset()
    _, reward, _, _ = venv.step(np.array([0, 1]))
    assert reward.shape == (2,) and (0.5 < reward).all() and (reward < 1.0).all()  # white background, dark cart
    venv.close()
