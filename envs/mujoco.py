"""MuJoCo v5 locomotion envs with fast headless rendering (EGL; shadows, reflections, skybox off).

On a CPU-only machine (Mesa's software rasteriser) a 128x128 HalfCheetah frame costs about 74 ms
with Gymnasium's defaults, 16 ms without shadows and reflections, and 5 ms without the skybox as
well; the physics step costs 0.2 ms. Hence the defaults below; pass ``shadows=True`` etc. for
pretty videos.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import gymnasium as gym

from envs.rendering import RenderSize  # noqa: F401  (sets MUJOCO_GL=egl before mujoco loads)


class MujocoRenderFlags(gym.Wrapper):
    """Switches MuJoCo scene render flags on the offscreen viewer before its first frame.

    With ``infinite_floor``, ground planes are drawn without an edge (a plane's size only limits
    how far it is drawn; collisions with it are unaffected): a fast robot followed by the
    tracking camera otherwise runs off the drawn floor into black.
    """

    def __init__(self, env: gym.Env, shadows: bool, reflections: bool, skybox: bool, infinite_floor: bool = True) -> None:
        super().__init__(env)
        self._flags = {"mjRND_SHADOW": shadows, "mjRND_REFLECTION": reflections, "mjRND_SKYBOX": skybox}
        self._infinite_floor = infinite_floor
        self._configured = False

    def render(self) -> Any:
        if not self._configured and self.env.render_mode == "rgb_array":
            import mujoco

            # Gymnasium creates the offscreen viewer lazily; ask for it now so that the very
            # first frame is already rendered with the flags applied.
            viewer = self.env.unwrapped.mujoco_renderer._get_viewer(self.env.render_mode)
            for name, value in self._flags.items():
                viewer.scn.flags[getattr(mujoco.mjtRndFlag, name)] = int(value)
            if self._infinite_floor:
                model = self.env.unwrapped.model
                planes = model.geom_type == mujoco.mjtGeom.mjGEOM_PLANE
                model.geom_size[planes, :2] = 0.0  # zero half-sizes: drawn without an edge
            self._configured = True
        return self.env.render()


# Gymnasium's v5 XML files still use this attribute; MuJoCo >= 3.3 prints a deprecation notice
# for it on every model compile. It says nothing about the user's run, so it is dropped.
_KNOWN_DEPRECATIONS = ("compiler attribute 'settotalmass' is deprecated",)


@contextlib.contextmanager
def _mujoco_warnings_as_python() -> Iterator[None]:
    """While compiling models, turn MuJoCo's C warnings into Python warnings (minus known noise)."""
    import mujoco

    def forward(message: str) -> None:
        if not message.startswith(_KNOWN_DEPRECATIONS):
            warnings.warn(f"MuJoCo: {message}", RuntimeWarning, stacklevel=2)

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(forward)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


def make_mujoco(
    base_id: str,
    render_mode: str | None = None,
    render_width: int = 256,
    render_height: int = 256,
    shadows: bool = False,
    reflections: bool = False,
    skybox: bool = False,
    camera_name: str | None = "track",
    infinite_floor: bool = True,
    **kwargs: Any,
) -> gym.Env:
    """Make a Gymnasium MuJoCo env rendering ``(render_height, render_width, 3)`` frames.

    Args:
        base_id: Gymnasium id, e.g. ``"HalfCheetah-v5"``.
        render_mode: ``"rgb_array"`` or ``None``.
        render_width: Frame width in pixels (rendered natively).
        render_height: Frame height in pixels (rendered natively).
        shadows: Render shadows (slow without a GPU).
        reflections: Render floor reflections (slow without a GPU).
        skybox: Render the skybox.
        camera_name: Camera of the model's XML; ``"track"`` (every v5 locomotion model has one)
            follows the robot, which Gymnasium's default free camera does not: a trained
            HalfCheetah leaves its view within seconds. ``None``: Gymnasium's default camera.
        infinite_floor: Draw the ground plane to the horizon (rendering only).
        **kwargs: Passed to ``gymnasium.make`` (env parameters such as ``ctrl_cost_weight``).
    """
    with _mujoco_warnings_as_python():
        if camera_name is not None and "camera_id" not in kwargs:
            kwargs["camera_name"] = camera_name
        env = gym.make(base_id, render_mode=render_mode, width=int(render_width), height=int(render_height), **kwargs)
    return MujocoRenderFlags(env, shadows=shadows, reflections=reflections, skybox=skybox, infinite_floor=infinite_floor)
