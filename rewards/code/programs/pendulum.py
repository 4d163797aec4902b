"""Pendulum: swing up and hold upright, penalising speed and torque."""

import numpy as np


def compute_reward(obs, action, next_obs):
    theta = np.arctan2(next_obs[:, 1], next_obs[:, 0])  # 0 = upright
    torque = np.asarray(action, dtype=np.float64).reshape(len(obs), -1)[:, 0]
    angle = -(theta**2)
    velocity = -0.1 * next_obs[:, 2] ** 2
    effort = -0.001 * torque**2
    return angle + velocity + effort, {"angle": angle, "velocity": velocity, "effort": effort}
