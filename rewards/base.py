"""The reward-provider interface: a batch of transitions in, one float per transition out.

Every way of specifying a reward (the env's own, a hand-written function, LLM-written code, a
vision-language model, a model learned from preferences) is a :class:`RewardProvider`. Providers
are called on whole batches (all vector envs at once, or a dataset chunk), never per sample, so
that learned and model-based providers can use the hardware.

Learned providers may also subclass ``torch.nn.Module``; the method the framework calls is
:meth:`RewardProvider.reward`, so it does not clash with ``Module.__call__``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from envs.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    import gymnasium as gym


@dataclass(frozen=True)
class TransitionBatch:
    """A batch of transitions ``(s, a, s')`` with a leading batch axis.

    Attributes:
        obs: ``(batch, *obs_shape)`` observations before the action.
        action: ``(batch, *action_shape)`` actions taken.
        next_obs: ``(batch, *obs_shape)`` observations after the action (the real terminal
            observation at episode ends, not the first one of the next episode).
        env_reward: ``(batch,)`` float32, the environment's own (true) reward.
        terminated: ``(batch,)`` bool, the episode ended in a terminal state.
        truncated: ``(batch,)`` bool, the episode was cut by a time limit.
        frames: ``(batch, height, width, 3)`` uint8 frames of the next state, present only when
            the provider sets ``needs_frames``.
    """

    obs: np.ndarray
    action: np.ndarray
    next_obs: np.ndarray
    env_reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    frames: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.env_reward.shape[0])


class RewardProvider(abc.ABC):
    """Maps a :class:`TransitionBatch` to proxy rewards of shape ``(batch,)``.

    Subclasses set ``needs_frames = True`` when they score rendered frames; the runner then
    renders every step and fills :attr:`TransitionBatch.frames`.
    """

    needs_frames: bool = False
    #: Named parts of the last batch's reward, ``{name: (batch,)}`` (providers that have them set it
    #: in :meth:`reward`; the wrapper sums them per episode and the runner logs them).
    last_components: dict[str, np.ndarray] = {}  # noqa: RUF012  (replaced, never mutated)

    def bind(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        """Called once with the env's spaces before the first batch; validate or size here."""
        self.observation_space = observation_space
        self.action_space = action_space

    @abc.abstractmethod
    def reward(self, batch: TransitionBatch) -> np.ndarray:
        """Return the proxy rewards, float32 of shape ``(batch,)``."""

    #: Learned providers that change while training count their updates here; the runner then asks
    #: an off-policy agent to recompute the rewards in its replay buffer (``Agent.relabel``).
    version: int = 0

    def observe(self, batch: TransitionBatch, components: dict[str, np.ndarray] | None = None) -> None:
        """Called with every transition batch of the *training* env, after :meth:`reward` (online learners
        collect their data here). ``components``: the env's own reward terms from ``info`` (``reward_*``)."""

    def metrics(self) -> dict[str, float]:
        """Figures for ``metrics.csv`` at each evaluation (e.g. a learned reward's accuracy)."""
        return {}

    def attach(self, run_dir: Path) -> None:
        """Called once with the run directory (providers that write data as they go keep it there)."""

    def save(self, path: Path) -> None:
        """Write the provider's learned state into the checkpoint directory ``path`` (stateless: nothing)."""

    def load(self, path: Path) -> None:
        """Restore what :meth:`save` wrote."""

    def files(self) -> dict[str, str]:
        """Text files to keep in the run directory (relative path -> content), e.g. a reward program."""
        return {}

    def close(self) -> None:
        """Release workers, models or files held by the provider (may be called more than once)."""


def check_rewards(rewards: object, batch_size: int, source: str) -> np.ndarray:
    """Validate a provider's output: a finite array of shape ``(batch_size,)``, cast to float32.

    Args:
        rewards: What the provider returned.
        batch_size: Number of transitions in the batch.
        source: Names the provider in error messages.

    Raises:
        ConfigError: Wrong shape or non-finite values (the provider, or its configuration, is at fault).
    """
    out = np.asarray(rewards, dtype=np.float32)
    if out.shape != (batch_size,):
        raise ConfigError(
            f"{source} returned rewards of shape {out.shape}; expected ({batch_size},): "
            "one float per transition in the batch"
        )
    if not np.isfinite(out).all():
        bad = int(np.flatnonzero(~np.isfinite(out))[0])
        raise ConfigError(f"{source} returned a non-finite reward ({out[bad]}) at batch index {bad}")
    return out
