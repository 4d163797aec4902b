"""CartPole: keep the pole upright and the cart near the centre."""

import numpy as np

ANGLE_LIMIT = 0.2095  # the episode ends beyond these
X_LIMIT = 2.4


def compute_reward(obs, action, next_obs):
    x, angle = next_obs[:, 0], next_obs[:, 2]
    failed = (np.abs(angle) > ANGLE_LIMIT) | (np.abs(x) > X_LIMIT)
    alive = np.where(failed, 0.0, 1.0)
    upright = 0.5 * (1.0 - np.clip(np.abs(angle) / ANGLE_LIMIT, 0.0, 1.0))
    centred = 0.2 * (1.0 - np.clip(np.abs(x) / X_LIMIT, 0.0, 1.0))
    components = {"alive": alive, "upright": upright, "centred": centred}
    return alive + upright + centred, components
