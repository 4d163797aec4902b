"""MiniGrid tasks with a vector observation that SB3 MLP policies consume, and ``info["success"]``.

Observation (:class:`OneHotObs`): the agent's egocentric ``view x view`` grid, each cell one-hot
encoded by object type (11), colour (6) and state (3), flattened, followed by a one-hot of the
agent's direction (4): ``view*view*20 + 4`` floats in {0, 1} (984 for the default 7x7 view).
The mission string is dropped: in the registered tasks it carries no information the policy
needs (DoorKey, Unlock, FourRooms have one mission; in KeyCorridor the only ball is the target).

Success (:class:`SuccessInfo`): MiniGrid terminates an episode when the task is solved, with
reward ``1 - 0.9 * steps / max_steps > 0``; ``info["success"]`` is set on the last step of every
episode (``True`` when terminated with positive reward, ``False`` on truncation).
"""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from envs.rendering import RenderSize

N_OBJECTS, N_COLORS, N_STATES, N_DIRECTIONS = 11, 6, 3, 4
_CELL = N_OBJECTS + N_COLORS + N_STATES


class OneHotObs(gym.ObservationWrapper):
    """Dict MiniGrid observation -> flat float32 one-hot vector (see module docstring)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        view = env.unwrapped.agent_view_size
        self._n_cells = view * view
        size = self._n_cells * _CELL + N_DIRECTIONS
        self.observation_space = gym.spaces.Box(0.0, 1.0, (size,), np.float32)
        self._offsets = np.array([0, N_OBJECTS, N_OBJECTS + N_COLORS], dtype=np.int64)
        self._cell_base = np.arange(self._n_cells, dtype=np.int64)[:, None] * _CELL

    def observation(self, observation: dict[str, Any]) -> np.ndarray:
        image = np.asarray(observation["image"], dtype=np.int64).reshape(self._n_cells, 3)
        out = np.zeros(self.observation_space.shape, dtype=np.float32)
        out[(self._cell_base + self._offsets + image).ravel()] = 1.0
        out[self._n_cells * _CELL + int(observation["direction"])] = 1.0
        return out


class SuccessInfo(gym.Wrapper):
    """Adds ``info["success"]`` on the last step of every episode."""

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        if terminated or truncated:
            info["success"] = bool(terminated and float(reward) > 0.0)
        return obs, reward, terminated, truncated, info


def make_minigrid(
    base_id: str,
    render_mode: str | None = None,
    render_width: int | None = None,
    render_height: int | None = None,
    tile_size: int = 32,
    **kwargs: Any,
) -> gym.Env:
    """Make a MiniGrid env with one-hot vector observations and ``info["success"]``.

    Frames are the full grid drawn with ``tile_size`` pixels per cell; give ``render_width`` and
    ``render_height`` to get another size (resized keeping the grid's aspect ratio, padded black).

    Args:
        base_id: MiniGrid id, e.g. ``"MiniGrid-DoorKey-5x5-v0"``.
        render_mode: ``"rgb_array"`` or ``None``.
        render_width: Frame width in pixels (``None``: grid width * tile_size).
        render_height: Frame height in pixels (``None``: grid height * tile_size).
        tile_size: Pixels per grid cell when drawing.
        **kwargs: Passed to ``gymnasium.make`` (e.g. ``max_steps``).
    """
    import minigrid  # noqa: F401  (registers the MiniGrid ids)

    env = gym.make(base_id, render_mode=render_mode, tile_size=int(tile_size), **kwargs)
    env = SuccessInfo(OneHotObs(env))
    base = env.unwrapped
    width = int(render_width) if render_width else base.width * int(tile_size)
    height = int(render_height) if render_height else base.height * int(tile_size)
    return RenderSize(env, width, height, fit="pad")
