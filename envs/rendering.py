"""Rendering helpers shared by every env family: exact frame size, frames in ``info``.

Frames are ``uint8`` arrays of shape ``(height, width, 3)``. Families that can draw at the
requested size do so natively (MuJoCo, classic control); :class:`RenderSize` resizes whatever
is left, and does nothing when the native frame already has the requested size.
"""

from __future__ import annotations

import os
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from typing_extensions import override

# Headless by default: MuJoCo through EGL, pygame (classic control, MiniGrid) without a window.
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


def resize_frame(frame: np.ndarray, width: int, height: int, fit: str = "stretch") -> np.ndarray:
    """Resize one frame to ``(height, width, 3)``; returns the input itself if it already fits.

    Args:
        frame: ``(h, w, 3)`` uint8 image.
        width: Target width in pixels.
        height: Target height in pixels.
        fit: ``"stretch"`` to fill the target, ``"pad"`` to keep the aspect ratio and pad with black.

    Returns:
        ``(height, width, 3)`` uint8 image.
    """
    h, w = frame.shape[:2]
    if h == height and w == width:
        return frame
    from PIL import Image

    if fit == "stretch":
        return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BILINEAR))
    scale = min(width / w, height / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.zeros((height, width, 3), dtype=np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top : top + new_h, left : left + new_w] = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.BILINEAR))
    return out


class RenderSize(gym.Wrapper):
    """Guarantees that ``render()`` returns frames of exactly ``(height, width, 3)``.

    Args:
        env: The env to wrap.
        width: Frame width in pixels.
        height: Frame height in pixels.
        fit: ``"stretch"`` or ``"pad"`` (keep the aspect ratio, pad with black); see :func:`resize_frame`.
    """

    def __init__(self, env: gym.Env, width: int, height: int, fit: str = "stretch") -> None:
        super().__init__(env)
        if width <= 0 or height <= 0:
            from envs.errors import ConfigError

            raise ConfigError(f"render size must be positive, got width={width} height={height}")
        self.width = int(width)
        self.height = int(height)
        self.fit = fit

    @override
    def render(self) -> Any:
        frame = self.env.render()
        if isinstance(frame, np.ndarray) and frame.ndim == 3:
            return resize_frame(frame, self.width, self.height, self.fit)
        return frame


class FrameInInfo(gym.Wrapper):
    """Renders after every ``step`` and puts the frame in ``info["frame"]``.

    Used when a reward provider scores frames: the frame of the *next* state is captured inside
    the env, before a vector env auto-resets, so the terminal frame of an episode is the real
    terminal frame and not the first frame of the next episode.
    """

    @override
    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        info["frame"] = self.env.render()
        return obs, reward, terminated, truncated, info
