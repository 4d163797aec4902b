"""Classic control (Gymnasium's CartPole and Pendulum) with headless frames at a chosen size."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from envs.rendering import RenderSize


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
