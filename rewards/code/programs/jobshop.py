"""Job-shop: penalise the growth of the makespan lower bound and idle machine time of each dispatch."""

import numpy as np


def compute_reward(obs, action, next_obs):
    chosen = np.take_along_axis(obs, np.asarray(action).reshape(-1, 1, 1).astype(np.int64), axis=1)[:, 0]
    makespan = -chosen[:, 10]  # increase of the makespan lower bound / d_max
    idle = -0.1 * chosen[:, 7]  # idle wait before the operation / d_max
    return makespan + idle, {"makespan": makespan, "idle": idle}
