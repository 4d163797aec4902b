"""Hopper: hop forward while staying healthy (torso high and upright)."""

import numpy as np


def compute_reward(obs, action, next_obs):
    height, angle = next_obs[:, 0], next_obs[:, 1]
    healthy = ((height > 0.7) & (np.abs(angle) < 0.2)).astype(np.float64)
    forward = next_obs[:, 5]  # torso x velocity
    control = -1e-3 * np.sum(np.square(action), axis=1)
    return healthy + forward + control, {"healthy": healthy, "forward": forward, "control": control}
