"""HalfCheetah: run backwards (negative x velocity) with little control effort, torso not flipped."""

import numpy as np


def compute_reward(obs, action, next_obs):
    backward = -next_obs[:, 8]  # minus the torso x velocity
    control = -0.1 * np.sum(np.square(action), axis=1)
    upright = -0.5 * np.clip(np.abs(next_obs[:, 1]) - 1.0, 0.0, None)  # flipping onto the back is not running
    return backward + control + upright, {"backward": backward, "control": control, "upright": upright}
