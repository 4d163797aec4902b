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
the evaluation before training, which would only repeat the final one) and ``describe()``
(facts about the agent for ``summary.json``, e.g. a solver's status).

What an agent needs from the run is passed to its constructor by name (the builder,
:func:`experiments.builders.build_agent`, fills in the parameters the constructor declares):
``env`` (the training vector env, proxy reward swapped in), ``reward`` (the run's
:class:`~rewards.base.RewardProvider`), ``observation_space`` / ``action_space``, ``card`` (the env's
:class:`~envs.cards.EnvCard`), ``seed`` and ``device``. What it requires of the env and the data it
declares up front in :meth:`Agent.requirements`, checked before anything is built
(:func:`check_compatible`).

Optional capabilities are small protocols, checked with ``isinstance``:

* :class:`Relabels`: recomputes the rewards it stores (an off-policy replay buffer) after a learned
  reward changed;
* :class:`HasReferenceScores`: ``(random, expert)`` mean returns (e.g. of an offline dataset): the
  runner then reports D4RL's normalised score;
* :class:`LearnsFromDataset`: learns from a prepared offline dataset (``dataset=<id>``), given to it
  with ``set_dataset`` after it is built (d3rlpy's ``fit(dataset)`` shape);
* :class:`ReportsEvaluation`: adds figures and files to the final evaluation (a text agent's
  distinct-n, KL to its reference and ``samples.md``).
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from envs.errors import ConfigError

if TYPE_CHECKING:
    from envs.cards import EnvCard
    from envs.data import Episodes
    from rewards.base import RewardProvider

ANY_ACTION: tuple[type[gym.Space], ...] = (
    gym.spaces.Box,
    gym.spaces.Discrete,
    gym.spaces.MultiDiscrete,
    gym.spaces.MultiBinary,
)


@dataclass(frozen=True)
class Requirements:
    """What an agent needs of an env and a run, known before anything is built.

    Attributes:
        action_spaces: Action space types the agent can act in.
        features: Env features it relies on (:attr:`envs.cards.EnvCard.features`, e.g. ``"action_masks"``).
        dataset: It learns from an offline dataset (``dataset=<id>``) and cannot run without one.
        hint: Added to a refusal: which agents to use instead.
        label: How refusals name the agent (default ``agent=<config name>``), e.g. the algorithm ``SAC``.
        first_update: The smallest budget (``steps``) that gives the agent one update (an off-policy
            agent's ``learning_starts + 1``, an on-policy one's first full rollout); a run with less
            would only evaluate its initial policy, and is refused. ``first_update_why`` says why.
        first_update_why: What sets ``first_update``, with the setting to change (for the refusal).
        imagined_rewards: It scores the run's reward on transitions a learned model imagines (planners,
            model rollouts): the provider must work on observations and actions alone
            (:func:`rewards.env.check_imagined`, checked with the reward before anything is built).
    """

    action_spaces: tuple[type[gym.Space], ...] = ANY_ACTION
    features: frozenset[str] = frozenset()
    dataset: bool = False
    hint: str = ""
    label: str = ""
    first_update: int = 0
    first_update_why: str = ""
    imagined_rewards: bool = False


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


class SilentCallback:
    """A :class:`TrainCallback` that never stops training and keeps nothing (scripts that train outside the runner)."""

    def on_step(self, num_steps: int) -> bool:
        """Go on."""
        return True

    def on_log(self, num_steps: int, values: Mapping[str, float]) -> None:
        """Ignore the statistics."""


class Agent(abc.ABC):
    """Base class of every agent (see module docstring)."""

    learns: bool = True

    @classmethod
    def requirements(cls, config: Mapping[str, Any]) -> Requirements:
        """What this agent, configured with ``config`` (its ``conf/agent/*.yaml`` node), needs of the env."""
        return Requirements()

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

    def close(self) -> None:  # noqa: B027  (an optional hook: a no-op for agents that hold nothing)
        """Release what the agent holds (its training env, workers)."""


@runtime_checkable
class Relabels(Protocol):
    """An agent that stores rewards (a replay buffer) and can recompute them with a changed reward."""

    def relabel(self, reward: RewardProvider) -> None:
        """Recompute every stored reward with ``reward`` (after a learned reward's ``version`` changed)."""
        ...


@runtime_checkable
class HasReferenceScores(Protocol):
    """An agent whose data defines D4RL's reference returns (random and expert policy)."""

    def reference_scores(self) -> tuple[float | None, float | None]:
        """``(random, expert)`` mean returns, each ``None`` where unknown."""
        ...


@runtime_checkable
class LearnsFromDataset(Protocol):
    """An agent that learns from an offline dataset, prepared outside it (labelled with the run's reward)."""

    def set_dataset(self, data: Episodes) -> None:
        """Take the dataset to learn from: ``data.rewards`` are the labels to train on (the run's proxy)."""
        ...


@runtime_checkable
class ReportsEvaluation(Protocol):
    """An agent that adds figures and files to the final evaluation (e.g. a text agent's diversity and samples)."""

    def evaluation_report(self, stats: Mapping[str, Any]) -> tuple[dict[str, float], dict[str, str]]:
        """``(figures, files)`` from the final evaluation's statistics (:func:`experiments.evaluation.summarize`).

        Figures join the env's in ``summary.json``; files (relative path -> text) are written into the run directory.
        """
        ...


def check_number_settings(cls: type, node: Mapping[str, Any], group: str) -> None:
    """Refuse a number setting given as text (``agent.utd=abc``) before anything is built.

    Each top-level key of ``node`` whose parameter in the constructor of ``cls`` (or of a base class, for
    settings passed on through ``**kwargs``) is annotated plain ``int`` or ``float`` must hold a number
    (``int`` for ``int``); other annotations are left to the class.

    Raises:
        ConfigError: Such a setting holds something else (the message names the key and the type).
    """
    import typing

    wanted: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            wanted.update(typing.get_type_hints(init))
        except Exception:
            wanted.update(getattr(init, "__annotations__", {}))
    for key, value in node.items():
        kind = {int: int, float: float, "int": int, "float": float}.get(wanted.get(key))
        if kind is None:
            continue
        ok = isinstance(value, int) if kind is int else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok:
            what = "an integer" if kind is int else "a number"
            raise ConfigError(f"{group}.{key}={value!r} must be {what} ({cls.__name__} takes {key}: {kind.__name__})")


def check_compatible(
    name: str,
    requirements: Requirements,
    action_space: gym.Space,
    card: EnvCard | None,
    has_dataset: bool,
    steps: int | None = None,
) -> None:
    """Refuse an agent that cannot run on this env (or without / with a dataset, or learn within ``steps``).

    Args:
        name: The agent's config name (``agent=<name>``).
        requirements: What it needs (:meth:`Agent.requirements`).
        action_space: The env's action space.
        card: The env's card (its features); ``None``: an env rewardlab knows nothing about.
        has_dataset: The run was given ``dataset=<id>``.
        steps: The run's budget (``None``: not checked).

    Raises:
        ConfigError: The first requirement the env or the run does not meet, with what would work.
    """
    hint = f"; {requirements.hint}" if requirements.hint else ""
    who = requirements.label or f"agent={name}"
    if not isinstance(action_space, requirements.action_spaces):
        kinds = " or ".join(s.__name__ for s in requirements.action_spaces)
        raise ConfigError(f"{who} needs a {kinds} action space, but this env has {action_space}{hint}")
    missing = sorted(requirements.features - (card.features if card is not None else frozenset()))
    if missing:
        env = card.id if card is not None else "this env"
        raise ConfigError(f"{who} needs an env that provides {', '.join(missing)}; {env} does not{hint}")
    if requirements.dataset and not has_dataset:
        raise ConfigError(f"agent={name} learns from a dataset: give dataset=<id>{hint}")
    if has_dataset and not requirements.dataset:
        raise ConfigError(
            f"agent={name} learns online and would ignore dataset=; drop dataset= or use an offline agent (iql, bc, cpl)"
        )
    if steps is not None and steps < requirements.first_update:
        raise ConfigError(
            f"steps={steps} gives {who} no update: {requirements.first_update_why} "
            f"(the first update comes at step {requirements.first_update}); give more steps or change that setting"
        )
