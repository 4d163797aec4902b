"""MiniGrid tasks with a vector observation that SB3 MLP policies consume, and ``info["success"]``.

Observation (:class:`OneHotObs`): the agent's egocentric ``view x view`` grid, each cell one-hot
encoded by object type (11), colour (6) and state (3), flattened, followed by a one-hot of the
agent's direction (4): ``view*view*20 + 4`` floats in {0, 1} (984 for the default 7x7 view).
The mission string is dropped: in the registered tasks it carries no information the policy
needs (DoorKey, Unlock, FourRooms have one mission; in KeyCorridor the only ball is the target).

Success (:class:`SuccessInfo`): MiniGrid terminates an episode when the task is solved, with
reward ``1 - 0.9 * steps / max_steps > 0``; ``info["success"]`` is set on the last step of every
episode (``True`` when terminated with positive reward, ``False`` on truncation).

The cards (:class:`envs.cards.EnvCard`) give the prompt layout of this observation; the reward
(it depends on the step count) and termination (on the grid) have no closed form here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, SupportsFloat, cast

import gymnasium as gym
import numpy as np
from typing_extensions import override

from envs.cards import EnvCard
from envs.rendering import RenderSize

if TYPE_CHECKING:
    from minigrid.minigrid_env import MiniGridEnv

N_OBJECTS, N_COLORS, N_STATES, N_DIRECTIONS = 11, 6, 3, 4
_CELL = N_OBJECTS + N_COLORS + N_STATES


class OneHotObs(gym.ObservationWrapper):
    """Dict MiniGrid observation -> flat float32 one-hot vector (see module docstring)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        view = cast("MiniGridEnv", env.unwrapped).agent_view_size
        self._n_cells = view * view
        size = self._n_cells * _CELL + N_DIRECTIONS
        self._size = size
        self.observation_space = gym.spaces.Box(0.0, 1.0, (size,), np.float32)
        self._offsets = np.array([0, N_OBJECTS, N_OBJECTS + N_COLORS], dtype=np.int64)
        self._cell_base = np.arange(self._n_cells, dtype=np.int64)[:, None] * _CELL

    @override
    def observation(self, observation: dict[str, Any]) -> np.ndarray:
        image = np.asarray(observation["image"], dtype=np.int64).reshape(self._n_cells, 3)
        out = np.zeros(self._size, dtype=np.float32)  # (size,), the observation space's shape
        out[(self._cell_base + self._offsets + image).ravel()] = 1.0
        out[self._n_cells * _CELL + int(observation["direction"])] = 1.0
        return out


class SuccessInfo(gym.Wrapper):
    """Adds ``info["success"]`` on the last step of every episode."""

    @override
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
    base = cast("MiniGridEnv", env.unwrapped)
    width = int(render_width) if render_width else base.width * int(tile_size)
    height = int(render_height) if render_height else base.height * int(tile_size)
    return RenderSize(env, width, height, fit="pad")


# --- cards -----------------------------------------------------------------------------------

_OBJECTS = "unseen empty wall floor door key ball box goal lava agent".split()
_COLORS = "red green blue purple yellow grey".split()
_STATES = "open closed locked".split()
_ACTIONS = "0 turn left, 1 turn right, 2 move forward, 3 pick up, 4 drop, 5 toggle (open a door; needs the key of its colour if locked), 6 done"


def describe(env: gym.Env) -> str | None:
    """Prompt layout of the :class:`OneHotObs` observation (``None`` for another observation)."""
    shape = tuple(env.observation_space.shape or ())
    view = int(getattr(env.unwrapped, "agent_view_size", 7))
    cells = view * view
    if len(shape) != 1 or shape[0] != cells * _CELL + N_DIRECTIONS:
        return None
    n = shape[0]
    mission = str(getattr(env.unwrapped, "mission", "")).strip()
    base = env.unwrapped
    size = f"{base.width}x{base.height}" if hasattr(base, "width") and hasattr(base, "height") else "?"
    objects = ", ".join(f"{i} {o}" for i, o in enumerate(_OBJECTS))
    colors = ", ".join(f"{i} {c}" for i, c in enumerate(_COLORS))
    states = ", ".join(f"{i} {s}" for i, s in enumerate(_STATES))
    return (
        f"A {size} grid world seen from the agent (MiniGrid); mission: {mission!r}.\n"
        f"obs: float array (B, {n}) of 0/1 values, one-hot:\n"
        f"  grid = obs[:, :{cells * 20}].reshape(B, {view}, {view}, 20)   # grid[:, i, j]: the cell i columns from the left,\n"
        f"      # j rows from the top of the agent's {view}x{view} view. The agent is at grid[:, {view // 2}, {view - 1}],\n"
        f"      # facing up: grid[:, {view // 2}, {view - 2}] is the cell in front of it. Walls block the view (unseen).\n"
        f"  grid[..., 0:11]   object type: {objects}\n"
        f"  grid[..., 11:17]  colour: {colors}\n"
        f"  grid[..., 17:20]  door state: {states}\n"
        f"  The object the agent carries is shown in its own cell, grid[:, {view // 2}, {view - 1}].\n"
        f"  obs[:, {cells * 20}:{n}]  the agent's direction, one-hot (0 east, 1 south, 2 west, 3 north)\n"
        f"action: (B,) integers: {_ACTIONS}.\n"
        f"The episode ends when the agent steps on the goal (success) or after {getattr(env.unwrapped, 'max_steps', '?')} steps."
    )


CARDS = tuple(
    EnvCard(base_id=base_id, entry_point="envs.minigrid:make_minigrid", kwargs={"base_id": base_id}, describe=describe)
    for base_id in (
        "MiniGrid-DoorKey-5x5-v0",
        "MiniGrid-DoorKey-8x8-v0",
        "MiniGrid-KeyCorridorS3R1-v0",
        "MiniGrid-Unlock-v0",
        "MiniGrid-FourRooms-v0",
    )
)
