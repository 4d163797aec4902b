"""Hand-written controllers: ``policy=agents.scripted:<name>`` for ``experiments/collect.py``.

A scripted policy maps a batch of observations ``(batch, *obs_shape)`` to a batch of actions; it
gives expert data for tests and examples without training a policy first.
"""

from __future__ import annotations

import numpy as np


def cartpole_balance(obs: np.ndarray) -> np.ndarray:
    """Push towards where the pole is falling: ``(batch, 4)`` -> ``(batch,)`` actions (0 left, 1 right).

    ``angle + 0.5 * angular velocity`` with a small position/velocity correction keeps the pole up
    for the full 500 steps from CartPole's initial states.
    """
    x, x_dot, theta, theta_dot = obs[:, 0], obs[:, 1], obs[:, 2], obs[:, 3]
    return (theta + 0.5 * theta_dot + 0.01 * x + 0.1 * x_dot > 0).astype(np.int64)
