"""Hand-written batched reward functions, usable as ``reward=fn reward.target=rewards.examples:NAME``.

Each takes ``(obs, action, next_obs)`` with a leading batch axis and returns ``(batch,)`` rewards
(optionally with named components). They are the "expert-written reward" baselines, and show
proxy rewards that differ from the env's own: a study compares true and proxy return.
"""

from __future__ import annotations

import numpy as np

# CartPole-v1 observation: [cart x, cart velocity, pole angle (rad), pole angular velocity]
from envs.classic import CARTPOLE_ANGLE_LIMIT, CARTPOLE_X_LIMIT


def cartpole_upright(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Dense CartPole reward: keep the pole upright and the cart near the centre.

    Args:
        obs: ``(batch, 4)``.
        action: ``(batch,)``.
        next_obs: ``(batch, 4)``.

    Returns:
        ``(batch,)`` rewards in [0, 1] and components ``upright``, ``centered``.
    """
    upright = 1.0 - np.minimum(np.abs(next_obs[:, 2]) / CARTPOLE_ANGLE_LIMIT, 1.0)
    centered = 1.0 - np.minimum(np.abs(next_obs[:, 0]) / CARTPOLE_X_LIMIT, 1.0)
    reward = 0.8 * upright + 0.2 * centered
    return reward.astype(np.float32), {"upright": upright, "centered": centered}


def pendulum_upright(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """Pendulum: height of the tip (cos of the angle) minus a small velocity penalty.

    Args:
        obs: ``(batch, 3)`` = [cos theta, sin theta, angular velocity].
        action: ``(batch, 1)`` torque.
        next_obs: ``(batch, 3)``.
    """
    return (next_obs[:, 0] - 0.01 * next_obs[:, 2] ** 2).astype(np.float32)


def halfcheetah_backwards(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """HalfCheetah-v5 running *backwards*: minus forward velocity, minus the usual control cost.

    The v5 observation excludes the x position: ``obs[:, 8]`` is the forward (x) velocity of
    the torso. Against the env's own (forward) reward this proxy is anti-correlated by design.

    Args:
        obs: ``(batch, 17)``.
        action: ``(batch, 6)``.
        next_obs: ``(batch, 17)``.
    """
    backward = -next_obs[:, 8]
    control = 0.1 * np.sum(np.square(action), axis=1)
    return (backward - control).astype(np.float32), {"backward_velocity": backward, "control_cost": -control}


def cartpole_potential(obs: np.ndarray) -> np.ndarray:
    """A shaping potential for CartPole: minus the pole's angle and the cart's offset, normalised.

    Args:
        obs: ``(batch, 4)``.

    Returns:
        ``(batch,)`` potentials in [-2, 0].
    """
    return -(np.abs(obs[:, 2]) / CARTPOLE_ANGLE_LIMIT + np.abs(obs[:, 0]) / CARTPOLE_X_LIMIT).astype(np.float32)


def pendulum_potential(obs: np.ndarray) -> np.ndarray:
    """A shaping potential for Pendulum: the height of the tip, ``cos theta``.

    Args:
        obs: ``(batch, 3)`` = [cos theta, sin theta, angular velocity].
    """
    return obs[:, 0].astype(np.float32)
