"""Env cards: one per registered id; closed-form rewards and terminations reproduce the envs.

Gymnasium's ``check_env`` over every registered id (each with its card) is in tests/test_envs.py
(JobShop: tests/test_jobshop.py); the prompt layouts are checked in tests/test_code_prompts.py.
"""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import envs
from envs.cards import EnvCard, bound_fn, card, cards, closed_forms, numpy_fn
from envs.errors import ConfigError

TERMINATING = [
    "rewardlab/CartPole-v1",
    "rewardlab/Hopper-v5",
    "rewardlab/Walker2d-v5",
    "rewardlab/Ant-v5",
    "rewardlab/Humanoid-v5",
    "rewardlab/InvertedPendulum-v5",
]
NEVER = ["rewardlab/Pendulum-v1", "rewardlab/HalfCheetah-v5"]


def _rollout(env_id: str, steps: int, seed: int = 0, **kwargs: object) -> tuple[np.ndarray, ...]:
    """Random-action transitions ``(obs, action, next_obs, reward, terminated)``, resetting at episode ends."""
    env = gym.make(env_id, **kwargs)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    rows = []
    for _ in range(steps):
        action = env.action_space.sample()
        next_obs, reward, terminated, truncated, _ = env.step(action)
        rows.append((obs, action, next_obs, reward, terminated))
        obs = env.reset()[0] if terminated or truncated else next_obs
    env.close()
    return tuple(np.array(x) for x in zip(*rows, strict=True))


def test_every_registered_id_has_one_card() -> None:
    assert [c.id for c in cards()] == envs.registered_ids()
    assert all(isinstance(c, EnvCard) and c.id == f"rewardlab/{c.base_id}" for c in cards())
    assert card("rewardlab/JobShop-v0").features == {"action_masks", "jobshop"}
    assert all(c.describe is not None for c in cards())
    with pytest.raises(ConfigError, match=r"no env card for 'rewardlab/Nope-v0'.*rewardlab/CartPole-v1"):
        card("rewardlab/Nope-v0")


def test_import_envs_stays_light() -> None:
    code = "import sys, envs; print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'mujoco', 'stable_baselines3', 'minigrid'}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("sutton_barto", [False, True])
def test_cartpole_reward_reproduces_the_env(sutton_barto: bool) -> None:
    o, a, s, r, _ = _rollout("rewardlab/CartPole-v1", 400, sutton_barto_reward=sutton_barto)
    assert sutton_barto == bool((r == -1).any())  # failures happen: the variant's reward varies
    fn = card("rewardlab/CartPole-v1").reward_fn
    out = fn(torch.as_tensor(o), torch.as_tensor(a), torch.as_tensor(s), sutton_barto_reward=sutton_barto)
    assert out.dtype == torch.float32 and out.shape == (400,)
    np.testing.assert_array_equal(out.numpy(), r.astype(np.float32))
    np.testing.assert_array_equal(numpy_fn(fn)(o, a, s, sutton_barto_reward=sutton_barto), r.astype(np.float32))
    # closed_forms binds the env config's kwarg (as the runner passes it to gymnasium.make)
    reward, _ = closed_forms({"name": "cartpole", "id": "rewardlab/CartPole-v1", "sutton_barto_reward": sutton_barto})
    np.testing.assert_array_equal(numpy_fn(reward)(o, a, s), r.astype(np.float32))


def test_pendulum_reward_reproduces_the_env() -> None:
    o, a, s, r, _ = _rollout("rewardlab/Pendulum-v1", 300)
    a = a * 1.5  # beyond the torque limits: the env clips, and so must the closed form
    env = gym.make("rewardlab/Pendulum-v1")
    env.reset(seed=0)
    r = []
    for obs, action in zip(o, a, strict=True):  # replay each state with the scaled action
        env.unwrapped.state = np.array([np.arctan2(obs[1], obs[0]), obs[2]], dtype=np.float64)
        r.append(env.step(action)[1])
    env.close()
    r = np.array(r)
    assert np.abs(a).max() > 2.0 and r.std() > 1.0
    fn = card("rewardlab/Pendulum-v1").reward_fn
    out = fn(torch.as_tensor(o), torch.as_tensor(a), torch.as_tensor(s))
    assert out.dtype == torch.float32 and out.shape == (300,)
    np.testing.assert_allclose(out.numpy(), r, rtol=1e-6, atol=1e-5)  # float32 arithmetic
    np.testing.assert_allclose(numpy_fn(fn)(o, a, s), r, rtol=1e-6, atol=1e-6)  # float64 arithmetic


def test_inverted_pendulum_reward_reproduces_the_env() -> None:
    o, a, s, r, terminated = _rollout("rewardlab/InvertedPendulum-v5", 300)
    assert terminated.any() and (~terminated).any()
    fn = card("rewardlab/InvertedPendulum-v5").reward_fn
    assert fn is not None
    np.testing.assert_array_equal(numpy_fn(fn)(o, a, s), r)


@pytest.mark.parametrize("env_id", TERMINATING + NEVER)
def test_termination_reproduces_the_env(env_id: str) -> None:
    o, a, s, _, terminated = _rollout(env_id, 1000)
    if env_id in TERMINATING:  # random actions fall (Ant flips) within the steps, and mostly do not
        assert 3 <= terminated.sum() < 500, terminated.sum()
    else:
        assert not terminated.any()
    fn = card(env_id).termination_fn
    out = fn(torch.as_tensor(o), torch.as_tensor(a), torch.as_tensor(s))
    assert out.dtype == torch.bool and out.shape == (1000,)
    np.testing.assert_array_equal(out.numpy(), terminated)
    np.testing.assert_array_equal(numpy_fn(fn)(o, a, s), terminated)


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("rewardlab/Hopper-v5", {"healthy_z_range": (1.1, float("inf")), "healthy_angle_range": (-0.4, 0.4)}),
        ("rewardlab/Walker2d-v5", {"healthy_z_range": (1.0, 2.0), "exclude_current_positions_from_observation": False}),
        ("rewardlab/Humanoid-v5", {"terminate_when_unhealthy": False}),
    ],
)
def test_termination_follows_the_env_kwargs(env_id: str, kwargs: dict) -> None:
    o, a, s, _, terminated = _rollout(env_id, 400, **kwargs)
    termination = bound_fn(card(env_id).termination_fn, {**kwargs, "ctrl_cost_weight": 0.5})  # unknown names: dropped
    np.testing.assert_array_equal(numpy_fn(termination)(o, a, s), terminated)
    _, default = closed_forms({"name": "x", "id": env_id})
    if "terminate_when_unhealthy" in kwargs:
        assert not terminated.any() and numpy_fn(default)(o, a, s).any()  # the default would have ended it
    elif "exclude_current_positions_from_observation" not in kwargs:
        assert not np.array_equal(numpy_fn(default)(o, a, s), terminated)  # the kwargs matter here


def test_envs_without_closed_forms_say_so() -> None:
    assert closed_forms({"name": "halfcheetah", "id": "rewardlab/HalfCheetah-v5"})[0] is None
    assert closed_forms({"name": "minigrid", "id": "rewardlab/MiniGrid-Unlock-v0"}) == (None, None)
    with pytest.raises(ConfigError, match="no env card"):
        closed_forms({"name": "mcc", "id": "MountainCarContinuous-v0"})


def test_cartpole_scripted_balance_keeps_the_pole_up() -> None:
    policy = card("rewardlab/CartPole-v1").policies["balance"]
    env = gym.make("rewardlab/CartPole-v1")
    obs, _ = env.reset(seed=0)
    for t in range(500):
        obs, _, terminated, truncated, _ = env.step(int(policy(obs[None])[0]))
        assert not terminated, t
    assert truncated
    env.close()
