"""HalfCheetah: run forward fast with little control effort."""

import numpy as np


def compute_reward(obs, action, next_obs):
    forward = next_obs[:, 8]  # torso x velocity after the step
    control = -0.1 * np.sum(np.square(action), axis=1)
    return forward + control, {"forward": forward, "control": control}
