"""Reward functions and utilities used by the tests (importable as ``tests.helpers``)."""

from __future__ import annotations

import time

import numpy as np


def constant_one(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """1 per transition: on CartPole this equals the env's own reward."""
    return np.ones(len(obs), dtype=np.float32)


def slow_constant_one(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """As :func:`constant_one`, 10 ms per batch: makes a short run slow enough to interrupt."""
    time.sleep(0.01)
    return constant_one(obs, action, next_obs)


def brightness(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Mean pixel value of the next frame (a frame-based reward)."""
    assert frames.ndim == 4 and frames.shape[0] == len(obs) and frames.dtype == np.uint8
    return frames.reshape(len(frames), -1).mean(axis=1).astype(np.float32) / 255.0


def wrong_shape(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    return np.ones((len(obs), 2), dtype=np.float32)


def nan_reward(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    out = np.zeros(len(obs), dtype=np.float32)
    out[-1] = np.nan
    return out


NOT_CALLABLE = 3


def crash_later(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """Raises a bug-like error once the cart has moved right: a run that fails part way."""
    if (next_obs[:, 0] > 0.05).any():
        raise RuntimeError("bug in the reward function")
    return constant_one(obs, action, next_obs)
