"""Closed forms of some envs' own rewards, as batched functions of ``(obs, action, next_obs)``.

The env's reward is only observed on transitions that happened. Reward comparisons that evaluate
a reward on transitions that never happened (EPIC's canonicalisation, see
:mod:`rewards.distance`) need it as a function; an env config names one with
``true_reward: envs.true_rewards:<name>``. Each function here reproduces its env's reward exactly
(checked against the env in the tests); envs whose reward depends on hidden state (the MuJoCo
locomotion rewards use the x position, which the observation excludes; MiniGrid's depends on the
step count) have none.

Keyword arguments named like the env's own ``gymnasium.make`` kwargs receive their values.
"""

from __future__ import annotations

import numpy as np

CARTPOLE_X_LIMIT = 2.4  # CartPole-v1 terminates at |x| > 2.4 or |angle| > 12 degrees
CARTPOLE_ANGLE_LIMIT = 12 * 2 * np.pi / 360
PENDULUM_MAX_TORQUE = 2.0


def cartpole(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, sutton_barto_reward: bool = False) -> np.ndarray:
    """CartPole-v1: 1 per step (the terminal step included); Sutton & Barto's variant: -1 on failure, else 0.

    Args:
        obs: ``(batch, 4)``.
        action: ``(batch,)``.
        next_obs: ``(batch, 4)`` = [x, x velocity, angle, angular velocity] after the step.
    """
    if not sutton_barto_reward:
        return np.ones(len(next_obs), dtype=np.float32)
    failed = (np.abs(next_obs[:, 0]) > CARTPOLE_X_LIMIT) | (np.abs(next_obs[:, 2]) > CARTPOLE_ANGLE_LIMIT)
    return np.where(failed, -1.0, 0.0).astype(np.float32)


def pendulum(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """Pendulum-v1: ``-(theta^2 + 0.1 theta_dot^2 + 0.001 u^2)`` of the state *before* the step.

    Args:
        obs: ``(batch, 3)`` = [cos theta, sin theta, angular velocity].
        action: ``(batch, 1)`` torque (clipped to [-2, 2] as the env does).
        next_obs: ``(batch, 3)``.
    """
    theta = np.arctan2(obs[:, 1], obs[:, 0])
    u = np.clip(np.asarray(action, dtype=np.float64).reshape(len(obs), -1)[:, 0], -PENDULUM_MAX_TORQUE, PENDULUM_MAX_TORQUE)
    cost = theta**2 + 0.1 * obs[:, 2].astype(np.float64) ** 2 + 0.001 * u**2
    return (-cost).astype(np.float32)
