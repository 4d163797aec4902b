"""MuJoCo v5 envs (locomotion, InvertedPendulum) with fast headless rendering (EGL; shadows, reflections, skybox off).

On a CPU-only machine (Mesa's software rasteriser) a 128x128 HalfCheetah frame costs about 74 ms
with Gymnasium's defaults, 16 ms without shadows and reflections, and 5 ms without the skybox as
well; the physics step costs 0.2 ms. Hence the defaults below; pass ``shadows=True`` etc. for
pretty videos.

The cards (:class:`envs.cards.EnvCard`) give each env's prompt layout and its termination in
closed form. With default kwargs it is exact for Walker2d and Humanoid (the tested quantities
are in the observation, in float64); for Hopper and Ant it is an approximation, stated in
their functions' docstrings. There is no closed-form reward for locomotion: every locomotion reward
needs the x position before and after the step, which the observation excludes. InvertedPendulum's
reward (1 per step that does not end the episode) and termination are exact.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
from typing_extensions import override

from envs.cards import EnvCard, TensorFn, never_terminates, vector_layout
from envs.rendering import RenderSize  # noqa: F401  (sets MUJOCO_GL=egl before mujoco loads)

if TYPE_CHECKING:
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv
    from torch import Tensor


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

    @override
    def render(self) -> Any:
        if not self._configured and self.env.render_mode == "rgb_array":
            import mujoco

            base = cast("MujocoEnv", self.env.unwrapped)  # make_mujoco wraps Gymnasium MuJoCo envs only
            # Gymnasium creates the offscreen viewer lazily; ask for it now so that the very
            # first frame is already rendered with the flags applied.
            viewer = base.mujoco_renderer._get_viewer(self.env.render_mode)
            for name, value in self._flags.items():
                viewer.scn.flags[getattr(mujoco.mjtRndFlag, name)] = int(value)
            if self._infinite_floor:
                model = base.model
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


def _load_triton_before_egl() -> None:
    """Load triton's native library before MuJoCo's first EGL frame (a workaround, not a feature).

    torch's compiler stack loads triton the first time an optimiser is created; when Mesa's EGL
    (MuJoCo's headless renderer) is already loaded in the process, that load segfaults (torch 2.14.1
    with Debian's Mesa: render a HalfCheetah frame, then ``torch.optim.Adam(...)``, exit 139). Loaded
    first, both work. Builds of torch without triton (CPU wheels) skip this.
    """
    try:
        import triton  # noqa: F401
    except ImportError:
        pass


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
    if render_mode is not None:
        _load_triton_before_egl()
    with _mujoco_warnings_as_python():
        if camera_name is not None and "camera_id" not in kwargs:
            kwargs["camera_name"] = camera_name
        env = gym.make(base_id, render_mode=render_mode, width=int(render_width), height=int(render_height), **kwargs)
    return MujocoRenderFlags(env, shadows=shadows, reflections=reflections, skybox=skybox, infinite_floor=infinite_floor)


# --- cards: terminations from the observation ------------------------------------------------
# v5 observations start with qpos[1:] (Hopper, Walker2d) or qpos[2:] (Ant, Humanoid): the
# torso's z first. With exclude_current_positions_from_observation=False, x (and y) come first.

INF = float("inf")


def _between(x: Tensor, bounds: Sequence[float], closed: bool = False) -> Tensor:
    lo, hi = float(bounds[0]), float(bounds[1])
    return ((x >= lo) & (x <= hi)) if closed else ((x > lo) & (x < hi))


def _terminated(healthy: Tensor, terminate_when_unhealthy: bool) -> Tensor:
    return ~healthy if terminate_when_unhealthy else healthy.new_zeros(healthy.shape)


def hopper_termination(
    obs: Tensor,
    action: Tensor,
    next_obs: Tensor,
    healthy_state_range: Sequence[float] = (-100.0, 100.0),
    healthy_z_range: Sequence[float] = (0.7, INF),
    healthy_angle_range: Sequence[float] = (-0.2, 0.2),
    terminate_when_unhealthy: bool = True,
    exclude_current_positions_from_observation: bool = True,
) -> Tensor:
    """Hopper-v5 falls: z, torso angle, or another state element out of its open range.

    Approximation: the env tests ``qpos[2:]`` and the *unclipped* ``qvel`` against
    ``healthy_state_range``; the observation clips velocities to [-10, 10], so a velocity beyond
    +-100 (a simulation blowing up) is not seen. Everything else is exact.

    Args:
        obs: ``(batch, 11)`` (12 with positions included).
        action: ``(batch, 3)``.
        next_obs: ``(batch, 11)``: z, angle, 3 joint angles, 6 clipped velocities.
        healthy_state_range: The env's kwarg: open range of every observation element after z (angle included).
        healthy_z_range: The env's kwarg: open range of the torso's z (m).
        healthy_angle_range: The env's kwarg: open range of the torso's angle (rad).
        terminate_when_unhealthy: The env's kwarg: ``False``: never terminates.
        exclude_current_positions_from_observation: The env's kwarg: ``False``: x is ``obs[:, 0]``.

    Returns:
        ``(batch,)`` bool.
    """
    i = 0 if exclude_current_positions_from_observation else 1
    healthy = (
        _between(next_obs[:, i + 1 :], healthy_state_range).all(dim=-1)
        & _between(next_obs[:, i], healthy_z_range)
        & _between(next_obs[:, i + 1], healthy_angle_range)
    )
    return _terminated(healthy, terminate_when_unhealthy)


def walker2d_termination(
    obs: Tensor,
    action: Tensor,
    next_obs: Tensor,
    healthy_z_range: Sequence[float] = (0.8, 2.0),
    healthy_angle_range: Sequence[float] = (-1.0, 1.0),
    terminate_when_unhealthy: bool = True,
    exclude_current_positions_from_observation: bool = True,
) -> Tensor:
    """Walker2d-v5 falls: torso z or angle out of its open range (exact).

    Args:
        obs: ``(batch, 17)`` (18 with positions included).
        action: ``(batch, 6)``.
        next_obs: ``(batch, 17)``: z, angle, ...
        healthy_z_range: The env's kwarg: open range of the torso's z (m).
        healthy_angle_range: The env's kwarg: open range of the torso's angle (rad).
        terminate_when_unhealthy: The env's kwarg: ``False``: never terminates.
        exclude_current_positions_from_observation: The env's kwarg: ``False``: x is ``obs[:, 0]``.

    Returns:
        ``(batch,)`` bool.
    """
    i = 0 if exclude_current_positions_from_observation else 1
    healthy = _between(next_obs[:, i], healthy_z_range) & _between(next_obs[:, i + 1], healthy_angle_range)
    return _terminated(healthy, terminate_when_unhealthy)


def ant_termination(
    obs: Tensor,
    action: Tensor,
    next_obs: Tensor,
    healthy_z_range: Sequence[float] = (0.2, 1.0),
    terminate_when_unhealthy: bool = True,
    exclude_current_positions_from_observation: bool = True,
) -> Tensor:
    """Ant-v5 falls or flips: torso z out of its *closed* range, or a non-finite state.

    Approximation: the env tests ``qpos`` and ``qvel`` for finiteness; the observation lacks
    the x, y position (``qpos[:2]``), so only the rest is tested (a simulation that blows up
    makes them all non-finite at once).

    Args:
        obs: ``(batch, 105)`` (107 with positions included).
        action: ``(batch, 8)``.
        next_obs: ``(batch, 105)``: qpos[2:] (13), qvel (14), contact forces (78).
        healthy_z_range: The env's kwarg: closed range of the torso's z (m).
        terminate_when_unhealthy: The env's kwarg: ``False``: never terminates.
        exclude_current_positions_from_observation: The env's kwarg: ``False``: x, y are ``obs[:, :2]``.

    Returns:
        ``(batch,)`` bool.
    """
    import torch

    i = 0 if exclude_current_positions_from_observation else 2
    state = next_obs[:, : i + 13 + 14]  # the qpos and qvel part
    healthy = torch.isfinite(state).all(dim=-1) & _between(next_obs[:, i], healthy_z_range, closed=True)
    return _terminated(healthy, terminate_when_unhealthy)


def humanoid_termination(
    obs: Tensor,
    action: Tensor,
    next_obs: Tensor,
    healthy_z_range: Sequence[float] = (1.0, 2.0),
    terminate_when_unhealthy: bool = True,
    exclude_current_positions_from_observation: bool = True,
) -> Tensor:
    """Humanoid-v5 falls: torso z out of its open range (exact).

    Args:
        obs: ``(batch, 348)`` (350 with positions included).
        action: ``(batch, 17)``.
        next_obs: ``(batch, 348)``: z first.
        healthy_z_range: The env's kwarg: open range of the torso's z (m).
        terminate_when_unhealthy: The env's kwarg: ``False``: never terminates.
        exclude_current_positions_from_observation: The env's kwarg: ``False``: x, y are ``obs[:, :2]``.

    Returns:
        ``(batch,)`` bool.
    """
    i = 0 if exclude_current_positions_from_observation else 2
    return _terminated(_between(next_obs[:, i], healthy_z_range), terminate_when_unhealthy)


def inverted_pendulum_termination(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """InvertedPendulum-v5 ends when the pole leaves ``|angle| <= 0.2`` or the observation is not finite (exact).

    Args:
        obs: ``(batch, 4)``.
        action: ``(batch, 1)``.
        next_obs: ``(batch, 4)`` = [cart position, pole angle, cart velocity, pole angular velocity].

    Returns:
        ``(batch,)`` bool.
    """
    import torch

    return ~torch.isfinite(next_obs).all(dim=-1) | (next_obs[:, 1].abs() > 0.2)


def inverted_pendulum_reward(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """InvertedPendulum-v5: 1 for each step that does not end the episode, 0 for the one that does.

    Args:
        obs: ``(batch, 4)``.
        action: ``(batch, 1)``.
        next_obs: ``(batch, 4)``.

    Returns:
        ``(batch,)`` float32.
    """
    import torch

    return (~inverted_pendulum_termination(obs, action, next_obs)).to(torch.float32)


def _card(
    base_id: str,
    layout: tuple[int, str, str, str],
    termination_fn: TensorFn,
    reward_fn: TensorFn | None = None,
    **kwargs: Any,
) -> EnvCard:
    return EnvCard(
        base_id=base_id,
        entry_point="envs.mujoco:make_mujoco",
        kwargs={"base_id": base_id, **kwargs},
        describe=vector_layout(*layout),
        reward_fn=reward_fn,
        termination_fn=termination_fn,
    )


CARDS = (
    _card(
        "HalfCheetah-v5",
        (
            17,
            "obs[:, 0]     z of the torso (m)\n"
            "obs[:, 1]     pitch angle of the torso (rad)\n"
            "obs[:, 2:8]   joint angles: back thigh, back shin, back foot, front thigh, front shin, front foot (rad)\n"
            "obs[:, 8]     forward (x) velocity of the torso (m/s); positive = running forward\n"
            "obs[:, 9]     vertical (z) velocity of the torso (m/s)\n"
            "obs[:, 10]    pitch angular velocity of the torso (rad/s)\n"
            "obs[:, 11:17] joint angular velocities, same order as the angles (rad/s)",
            "action[:, 0:6]  joint torques in [-1, 1]: back thigh, back shin, back foot, front thigh, front shin, front foot",
            "A 2D running robot. Episodes last 1000 steps and never end early. dt = 0.05 s.",
        ),
        never_terminates,
    ),
    _card(
        "Hopper-v5",
        (
            11,
            "obs[:, 0]     z (height) of the torso (m), about 1.25 standing\n"
            "obs[:, 1]     pitch angle of the torso (rad)\n"
            "obs[:, 2:5]   joint angles: thigh, leg, foot (rad)\n"
            "obs[:, 5]     forward (x) velocity of the torso (m/s)\n"
            "obs[:, 6]     vertical (z) velocity of the torso (m/s)\n"
            "obs[:, 7]     pitch angular velocity (rad/s)\n"
            "obs[:, 8:11]  joint angular velocities: thigh, leg, foot (rad/s)",
            "action[:, 0:3]  joint torques in [-1, 1]: thigh, leg, foot",
            "A one-legged 2D robot that should hop forward. The episode ends (falls) when the torso height "
            "is <= 0.7, |torso angle| >= 0.2, or any other observation leaves [-100, 100]; at most 1000 steps. dt = 0.008 s.",
        ),
        hopper_termination,
    ),
    _card(
        "Walker2d-v5",
        (
            17,
            "obs[:, 0]     z (height) of the torso (m)\n"
            "obs[:, 1]     pitch angle of the torso (rad)\n"
            "obs[:, 2:5]   right thigh, leg, foot angles (rad)\n"
            "obs[:, 5:8]   left thigh, leg, foot angles (rad)\n"
            "obs[:, 8]     forward (x) velocity of the torso (m/s)\n"
            "obs[:, 9]     vertical (z) velocity of the torso (m/s)\n"
            "obs[:, 10]    pitch angular velocity (rad/s)\n"
            "obs[:, 11:17] joint angular velocities, same order as the angles (rad/s)",
            "action[:, 0:6]  joint torques in [-1, 1]: right thigh, leg, foot, left thigh, leg, foot",
            "A two-legged 2D robot that should walk forward. The episode ends when the torso height leaves "
            "(0.8, 2.0) or |torso angle| >= 1; at most 1000 steps. dt = 0.008 s.",
        ),
        walker2d_termination,
    ),
    _card(
        "Ant-v5",
        (
            105,
            "obs[:, 0]       z (height) of the torso (m)\n"
            "obs[:, 1:5]     torso orientation quaternion (w, x, y, z)\n"
            "obs[:, 5:13]    hip and ankle angles of the 4 legs (rad)\n"
            "obs[:, 13:16]   torso velocity x, y, z (m/s); x = forward\n"
            "obs[:, 16:19]   torso angular velocity (rad/s)\n"
            "obs[:, 19:27]   joint angular velocities (rad/s)\n"
            "obs[:, 27:105]  contact forces on the 13 bodies (6 per body)",
            "action[:, 0:8]  hip and ankle torques in [-1, 1]",
            "A four-legged 3D robot. The episode ends when the torso height leaves [0.2, 1.0]; at most 1000 steps. dt = 0.05 s.",
        ),
        ant_termination,
    ),
    _card(
        "Humanoid-v5",
        (
            348,
            "obs[:, 0]        z (height) of the torso (m), about 1.4 standing\n"
            "obs[:, 1:5]      torso orientation quaternion (w, x, y, z)\n"
            "obs[:, 5:22]     joint angles (abdomen, hips, knees, shoulders, elbows) (rad)\n"
            "obs[:, 22:25]    torso velocity x, y, z (m/s); x = forward\n"
            "obs[:, 25:28]    torso angular velocity (rad/s)\n"
            "obs[:, 28:45]    joint angular velocities (rad/s)\n"
            "obs[:, 45:348]   body inertias, body velocities, actuator forces and contact forces",
            "action[:, 0:17]  joint torques in [-0.4, 0.4]",
            "A 3D humanoid. The episode ends when the torso height leaves [1.0, 2.0]; at most 1000 steps. dt = 0.015 s.",
        ),
        humanoid_termination,
    ),
    _card(
        "InvertedPendulum-v5",
        (
            4,
            "obs[:, 0]  cart position on the rail (m)\n"
            "obs[:, 1]  pole angle from upright (rad); the episode ends when |angle| > 0.2\n"
            "obs[:, 2]  cart velocity (m/s)\n"
            "obs[:, 3]  pole angular velocity (rad/s)",
            "action[:, 0]  force on the cart, in [-3, 3]",
            "Balance a pole on a cart. Reward 1 per step while the pole stays up; at most 1000 steps. dt = 0.04 s.",
        ),
        inverted_pendulum_termination,
        inverted_pendulum_reward,
        camera_name=None,  # no tracking camera in its model (the cart stays on a 2 m rail): Gymnasium's view
    ),
)
