"""MiniGrid DoorKey: reward the sub-goals (key picked up, door opened, goal reached), undoing none for free.

obs layout (rewards.code.prompts): grid = obs[:, :980].reshape(B, 7, 7, 20); the agent is at
grid[:, 3, 6] (showing what it carries), the cell in front of it is grid[:, 3, 5].
"""

import numpy as np

KEY, DOOR, GOAL = 5, 4, 8  # object types
OPEN = 17  # state channel of an open door
FORWARD, PICKUP, DROP, TOGGLE = 2, 3, 4, 5


def _grid(o):
    return o[:, :980].reshape(len(o), 7, 7, 20)


def compute_reward(obs, action, next_obs):
    before, after = _grid(obs), _grid(next_obs)
    action = np.asarray(action).reshape(len(obs))
    had_key, has_key = before[:, 3, 6, KEY] > 0.5, after[:, 3, 6, KEY] > 0.5
    key = 0.3 * (has_key & ~had_key) - 0.3 * (had_key & ~has_key)
    front_door_before = before[:, 3, 5, DOOR] > 0.5
    open_before = front_door_before & (before[:, 3, 5, OPEN] > 0.5)
    open_after = (after[:, 3, 5, DOOR] > 0.5) & (after[:, 3, 5, OPEN] > 0.5)
    door = 0.3 * (front_door_before & ~open_before & open_after & (action == TOGGLE))
    door = door - 0.3 * (open_before & ~open_after & (action == TOGGLE))
    goal = 1.0 * ((before[:, 3, 5, GOAL] > 0.5) & (action == FORWARD))
    step = np.full(len(obs), -0.01)
    components = {"key": key.astype(np.float64), "door": door.astype(np.float64), "goal": goal, "step": step}
    return components["key"] + components["door"] + goal + step, components
