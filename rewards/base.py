"""The reward-provider interface: a batch of transitions in, one float per transition out.

Every way of specifying a reward (the env's own, a hand-written function, LLM-written code, a
vision-language model, a model learned from preferences) is a :class:`RewardProvider`. Providers
are called on whole batches (all vector envs at once, or a dataset chunk), never per sample, so
that learned and model-based providers can use the hardware. The interface follows imitation's
``RewardFn`` (batched numpy in, ``(batch,)`` out) and mbrl-lib's ``reward_fn`` (a torch function
on ``(batch, ...)`` tensors, for planners that roll out a model):

* :class:`RewardProvider`: the minimal interface every provider has: :meth:`~RewardProvider.reward`
  on a :class:`TransitionBatch`, the extras it needs (:attr:`~RewardProvider.needs`), named
  components, files for the run directory, and :meth:`~RewardProvider.torch_reward` where the
  reward exists as a torch function;
* :class:`LearnedReward`: a provider that changes while an agent trains (a reward model learned from
  preferences): it observes the training data, counts its updates (``version``) so that stored
  rewards can be recomputed, reports figures, and saves / loads its state with the checkpoints.

Learned providers may also subclass ``torch.nn.Module``; the method the framework calls is
:meth:`RewardProvider.reward`, so it does not clash with ``Module.__call__``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from envs.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

    import gymnasium as gym
    import torch


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
        extras: ``{name: (batch, ...)}`` the extras the provider declared in ``needs``
            (:mod:`envs.extras`), e.g. ``"frame"``: ``(batch, height, width, 3)`` uint8 frames of
            the state after the action. Empty when the provider needs none.
    """

    obs: np.ndarray
    action: np.ndarray
    next_obs: np.ndarray
    env_reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    extras: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.env_reward.shape[0])

    @property
    def frames(self) -> np.ndarray | None:
        """``(batch, height, width, 3)`` uint8 frames after each step (``extras["frame"]``), or ``None``."""
        return self.extras.get("frame")


@runtime_checkable
class TorchRewardFn(Protocol):
    """A reward on torch tensors (mbrl-lib's ``reward_fn`` shape), differentiable where the reward is."""

    def __call__(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor, /) -> torch.Tensor:
        """``(batch, *obs_shape)``, ``(batch, *action_shape)``, ``(batch, *obs_shape)`` -> ``(batch,)`` float32."""
        ...


class RewardProvider(abc.ABC):
    """Maps a :class:`TransitionBatch` to proxy rewards of shape ``(batch,)``.

    Attributes:
        needs: Names of the per-step extras the provider scores besides ``(s, a, s')``
            (:mod:`envs.extras`; ``{"frame"}`` for rendered frames). The runner gathers exactly these
            from the env into :attr:`TransitionBatch.extras`.
        last_components: Named parts of the last batch's reward, ``{name: (batch,)}`` (providers that
            have them set it in :meth:`reward`; the wrapper sums them per episode and the runner logs them).
    """

    needs: frozenset[str] = frozenset()
    last_components: dict[str, np.ndarray] = {}  # noqa: RUF012  (replaced, never mutated)

    def bind(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        """Called with the env's spaces before the first batch (by each wrapper); validate or size here."""
        self.observation_space = observation_space
        self.action_space = action_space

    @abc.abstractmethod
    def reward(self, batch: TransitionBatch) -> np.ndarray:
        """Return the proxy rewards, float32 of shape ``(batch,)``."""

    def check_env(self, env: gym.Env) -> None:  # noqa: B027  (optional: most providers serve any env)
        """Refuse an env this provider cannot serve; the runner calls it once, before the run directory exists.

        Args:
            env: A fresh single env of the run, not one that trains: implementations may reset and step it.

        Raises:
            ConfigError: The provider cannot work on this env (the message says what would).
        """

    def torch_reward(self) -> TorchRewardFn | None:
        """The same reward as a function on torch tensors (planners, differentiable losses), or ``None``.

        ``None`` when the provider has no torch path here: it runs outside the process (reward code
        in the sandbox), scores extras such as frames, or the env's reward has no closed form.
        """
        return None

    def files(self) -> dict[str, str]:
        """Text files to keep in the run directory (relative path -> content), e.g. a reward program."""
        return {}

    def close(self) -> None:  # noqa: B027  (an optional hook: most providers hold nothing to release)
        """Release workers, models or files held by the provider (may be called more than once)."""


def config_needs(reward_cfg: Mapping[str, Any]) -> frozenset[str]:
    """The extras the provider of a ``reward`` config node will need, read from the config without building it.

    The ``needs`` declared by the classes its ``_target_`` (and a ``model`` / ``teacher`` sub-node's) name,
    and ``frame`` for ``frames: true`` (``reward=fn``). A target that does not import adds nothing: the
    provider's own build reports it.
    """
    from hydra.utils import get_class

    needs: set[str] = set()
    nodes = [reward_cfg, *(reward_cfg.get(k) for k in ("model", "teacher"))]
    for node in (n for n in nodes if isinstance(n, Mapping) and n.get("_target_")):
        try:
            declared: object = getattr(get_class(str(node["_target_"])), "needs", frozenset())
        except Exception:
            continue
        if isinstance(declared, (set, frozenset)):
            needs |= declared
    if reward_cfg.get("frames") is True:
        needs.add("frame")
    return frozenset(needs)


class LearnedReward(RewardProvider):
    """A provider that learns while the agent trains (e.g. from a teacher's preferences).

    The training env's wrapper shows it every transition (:meth:`observe`). Each update of the
    reward increments :attr:`version`; the runner then asks an agent that stores rewards (an
    off-policy replay buffer, see :class:`agents.base.Relabels`) to recompute them. Its state is
    part of every checkpoint (:meth:`save`, :meth:`load`).
    """

    #: Updates of the reward so far (0: nothing learned yet).
    version: int = 0

    def observe(self, batch: TransitionBatch, components: dict[str, np.ndarray] | None = None) -> None:
        """Called with every transition batch of the *training* env, after :meth:`reward`.

        Args:
            batch: The transitions the agent learns from.
            components: The env's own reward terms from ``info`` (``reward_*``), ``{name: (batch,)}``.
        """

    def metrics(self) -> dict[str, float]:
        """Figures for ``metrics.csv`` at each evaluation (e.g. a learned reward's accuracy)."""
        return {}

    def attach(self, run_dir: Path) -> None:
        """Called once with the run directory (providers that write data as they go keep it there)."""

    @abc.abstractmethod
    def save(self, path: Path) -> None:
        """Write the provider's learned state into the checkpoint directory ``path``."""

    @abc.abstractmethod
    def load(self, path: Path) -> None:
        """Restore what :meth:`save` wrote."""


@runtime_checkable
class LearnsFromRecords(Protocol):
    """A provider that learns from offline one-step records before labelling them (text envs' preference reward).

    A text agent calls it once with all its records, before it labels them with the provider.
    """

    def learn_from_records(
        self, batch: TransitionBatch, groups: np.ndarray, components: dict[str, np.ndarray] | None = None
    ) -> None:
        """Learn from ``n`` one-step records (``batch``), ``groups[i]`` the prompt of record ``i``, and their reward components."""
        ...


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
