"""The agent interface every rewardlab agent implements (online, offline, preference, model-based).

The runner only ever calls these five members, so any agent works with the same run directory,
evaluation, checkpoints and resume:

* ``num_steps``: budget consumed so far (env steps for online agents, gradient steps for offline ones);
* ``train(steps, callback)``: continue until ``num_steps >= steps`` (a *total*, so resuming a run
  calls it again with the same number) or until the callback asks to stop;
* ``act(obs, deterministic)``: batched actions for raw env observations;
* ``save(path)`` / ``load(path)``: everything needed to resume exactly (weights, optimiser
  state, replay buffer, normalisation statistics) into / from a directory.

Optional members: ``learns`` (``False`` for solvers and fixed rules: the runner then skips
the evaluation before training, which would only repeat the final one), ``describe()``
(facts about the agent for ``summary.json``, e.g. a solver's status) and ``reference_scores()``
(``(random, expert)`` mean returns, e.g. of an offline dataset: the runner then reports D4RL's
normalised score).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np


class TrainCallback(Protocol):
    """What an agent reports to the runner while it trains."""

    def on_step(self, num_steps: int) -> bool:
        """Called after each unit of budget (a vector-env step, a gradient step).

        Args:
            num_steps: Total budget consumed so far.

        Returns:
            ``False`` to stop training now (interrupt), ``True`` to go on.
        """

    def on_log(self, num_steps: int, values: Mapping[str, float]) -> None:
        """Training statistics; losses are named ``loss_*``."""


class Agent(abc.ABC):
    """Base class of every agent (see module docstring)."""

    learns: bool = True

    @property
    @abc.abstractmethod
    def num_steps(self) -> int:
        """Budget consumed so far."""

    @abc.abstractmethod
    def train(self, steps: int, callback: TrainCallback) -> None:
        """Train until ``num_steps >= steps`` or ``callback.on_step`` returns ``False``."""

    @abc.abstractmethod
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Actions for a batch of raw observations.

        Args:
            obs: ``(batch, *obs_shape)`` observations as the env emits them.
            deterministic: Greedy / mean action instead of a sample.

        Returns:
            ``(batch, *action_shape)`` actions.
        """

    @abc.abstractmethod
    def save(self, path: Path) -> None:
        """Write everything needed to resume into the directory ``path`` (created if missing)."""

    @abc.abstractmethod
    def load(self, path: Path) -> None:
        """Restore the state written by :meth:`save` into this (freshly built) agent."""

    def describe(self) -> dict[str, Any]:
        """Facts for ``summary.json`` (``agent_info``), e.g. a solver's status; JSON-serialisable."""
        return {}

    def close(self) -> None:
        """Release what the agent holds (its training env, workers)."""
