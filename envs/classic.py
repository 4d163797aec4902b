"""Classic control (Gymnasium's CartPole and Pendulum) with headless frames at a chosen size.

Each env's card (:class:`envs.cards.EnvCard`) holds its prompt layout, its reward and termination
in closed form (torch, batched; they reproduce the env's own, checked in the tests) and, for
CartPole, a scripted policy.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from envs.cards import EnvCard, never_terminates, vector_layout
from envs.rendering import RenderSize

if TYPE_CHECKING:
    from torch import Tensor

CARTPOLE_X_LIMIT = 2.4  # CartPole-v1 terminates at |x| > 2.4 or |angle| > 12 degrees
CARTPOLE_ANGLE_LIMIT = 12 * 2 * math.pi / 360
PENDULUM_MAX_TORQUE = 2.0


def make_classic(
    base_id: str,
    render_mode: str | None = None,
    render_width: int = 384,
    render_height: int = 256,
    **kwargs: Any,
) -> gym.Env:
    """Make a Gymnasium classic-control env that renders ``(render_height, render_width, 3)`` frames.

    Pendulum draws natively at the requested size (everything in its drawing scales with
    ``screen_dim``); CartPole draws the cart at fixed pixel coordinates, so it is drawn at its
    native 600x400 and resized.

    Args:
        base_id: Gymnasium id, e.g. ``"CartPole-v1"``.
        render_mode: ``"rgb_array"`` or ``None``.
        render_width: Frame width in pixels.
        render_height: Frame height in pixels.
        **kwargs: Passed to ``gymnasium.make`` (e.g. ``max_episode_steps``).
    """
    env = gym.make(base_id, render_mode=render_mode, **kwargs)
    base = env.unwrapped
    if hasattr(base, "screen_dim"):
        base.screen_dim = int(max(render_width, render_height))
    return RenderSize(env, render_width, render_height)


# --- CartPole-v1 -----------------------------------------------------------------------------


def cartpole_termination(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """CartPole-v1 ends when the cart leaves ``|x| <= 2.4`` or the pole ``|angle| <= 12 degrees``.

    The env tests its float64 state; the observation is that state rounded to float32, so a
    state within float32 rounding of a limit may be judged differently (never seen in practice).

    Args:
        obs: ``(batch, 4)``.
        action: ``(batch,)``.
        next_obs: ``(batch, 4)`` = [x, x velocity, angle, angular velocity] after the step.

    Returns:
        ``(batch,)`` bool.
    """
    return (next_obs[:, 0].abs() > CARTPOLE_X_LIMIT) | (next_obs[:, 2].abs() > CARTPOLE_ANGLE_LIMIT)


def cartpole_reward(obs: Tensor, action: Tensor, next_obs: Tensor, sutton_barto_reward: bool = False) -> Tensor:
    """CartPole-v1: 1 per step (the terminal step included); Sutton & Barto's variant: -1 on failure, else 0.

    Args:
        obs: ``(batch, 4)``.
        action: ``(batch,)``.
        next_obs: ``(batch, 4)`` = [x, x velocity, angle, angular velocity] after the step.
        sutton_barto_reward: The env's kwarg of that name.

    Returns:
        ``(batch,)`` float32.
    """
    import torch

    if not sutton_barto_reward:
        return torch.ones(len(next_obs), dtype=torch.float32, device=next_obs.device)
    return -cartpole_termination(obs, action, next_obs).to(torch.float32)


def cartpole_balance(obs: np.ndarray) -> np.ndarray:
    """Push towards where the pole is falling: ``(batch, 4)`` -> ``(batch,)`` actions (0 left, 1 right).

    ``angle + 0.5 * angular velocity`` with a small position/velocity correction keeps the pole up
    for the full 500 steps from CartPole's initial states.
    """
    x, x_dot, theta, theta_dot = obs[:, 0], obs[:, 1], obs[:, 2], obs[:, 3]
    return (theta + 0.5 * theta_dot + 0.01 * x + 0.1 * x_dot > 0).astype(np.int64)


CARTPOLE = EnvCard(
    base_id="CartPole-v1",
    entry_point="envs.classic:make_classic",
    kwargs={"base_id": "CartPole-v1"},
    describe=vector_layout(
        4,
        "obs[:, 0]  cart position x (m); the episode ends when |x| > 2.4\n"
        "obs[:, 1]  cart velocity (m/s)\n"
        "obs[:, 2]  pole angle from upright (rad, positive = leaning right); the episode ends when |angle| > 0.2095\n"
        "obs[:, 3]  pole angular velocity (rad/s)",
        "action[:]  0 = push the cart left, 1 = push it right (force 10 N)",
        "The episode also ends after 500 steps. 50 steps per second.",
    ),
    reward_fn=cartpole_reward,
    termination_fn=cartpole_termination,
    policies={"balance": cartpole_balance},
)


# --- Pendulum-v1 -----------------------------------------------------------------------------


def pendulum_reward(obs: Tensor, action: Tensor, next_obs: Tensor) -> Tensor:
    """Pendulum-v1: ``-(theta^2 + 0.1 theta_dot^2 + 0.001 u^2)`` of the state *before* the step.

    Computed in the observation's dtype; the env computes from its float64 state, of which the
    observation is the float32 rounding (differences ~1e-6).

    Args:
        obs: ``(batch, 3)`` = [cos theta, sin theta, angular velocity].
        action: ``(batch, 1)`` torque (clipped to [-2, 2] as the env does).
        next_obs: ``(batch, 3)``.

    Returns:
        ``(batch,)`` float32.
    """
    import torch

    theta = torch.atan2(obs[:, 1], obs[:, 0])
    u = action.reshape(len(obs), -1)[:, 0].to(obs.dtype).clamp(-PENDULUM_MAX_TORQUE, PENDULUM_MAX_TORQUE)
    cost = theta**2 + 0.1 * obs[:, 2] ** 2 + 0.001 * u**2
    return (-cost).to(torch.float32)


PENDULUM = EnvCard(
    base_id="Pendulum-v1",
    entry_point="envs.classic:make_classic",
    kwargs={"base_id": "Pendulum-v1"},
    describe=vector_layout(
        3,
        "obs[:, 0]  cos(theta)   (theta = 0: pendulum upright; theta = pi: hanging down)\n"
        "obs[:, 1]  sin(theta)\n"
        "obs[:, 2]  angular velocity theta_dot (rad/s), in [-8, 8]",
        "action[:, 0]  torque on the joint, in [-2, 2]",
        "Episodes last 200 steps and never end early; the pendulum starts at a random angle. dt = 0.05 s.",
    ),
    reward_fn=pendulum_reward,
    termination_fn=never_terminates,
)

CARDS = (CARTPOLE, PENDULUM)
