"""What every offline agent shares: the data on the device, sampling, one update -> log -> checkpoint loop.

An offline agent (``agent=iql``, ``agent=bc``, ``agent=cpl``) learns from a fixed dataset and is
evaluated in the env by the runner like any other agent. As in d3rlpy (an algorithm built from
shapes, then ``fit(dataset)``), building one and giving it data are two steps:

1. the constructor takes the env's spaces (and its hyperparameters) and builds the networks;
2. :meth:`OfflineAgent.set_dataset` takes prepared :class:`envs.data.Episodes` whose ``rewards``
   are already the run's labels (:func:`rewards.labels.labelled`: the run's reward provider, or the
   dataset's stored rewards), checks that its spaces are the env's, and moves observations, actions
   and rewards to the device once (on the CPU ``torch.from_numpy`` shares the arrays, so a dataset
   is held in memory once; observations are normalised per minibatch, not in a second copy).

Subclasses build their ``modules`` / ``optimizers`` in ``__init__``, may rescale rewards
(:meth:`OfflineAgent.scale_rewards`) or read more data (:meth:`OfflineAgent.prepare`), and implement
:meth:`OfflineAgent.update` (one gradient step on what :meth:`OfflineAgent.sample` returns, giving
``loss_*`` tensors). :meth:`OfflineAgent.train` is the one loop: sample, update, log every
``log_every`` steps, and report every step to the runner's callback (which evaluates and checkpoints);
``steps=`` counts gradient steps.

Schedules (IQL's cosine actor learning rate, CPL's BC phase and warm-up) are closed-form functions of
the gradient step and of :attr:`OfflineAgent.budget`, the total given to :meth:`OfflineAgent.train`
(the run's ``steps``). Nothing about a schedule's length is stored in a checkpoint or in the agent's
config, so a run resumed with a larger budget (``resume=RUN steps=600`` after ``steps=300``) continues
on the schedule a fresh ``steps=600`` run has from that step on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from typing_extensions import override

from agents.base import Agent, Requirements, TrainCallback
from agents.offline.nets import ActionScaler, Policy
from envs import data as ds
from envs.errors import ConfigError


@dataclass
class Batch:
    """A minibatch of transitions on the device, ``(batch, ...)`` each.

    Attributes:
        obs: ``(batch, obs_dim)`` normalised observations.
        actions: ``(batch, act_dim)`` actions scaled to ``[-1, 1]`` (Box), or ``(batch,)`` int64 (Discrete).
        rewards: ``(batch,)`` labels as the algorithm trains on them (:meth:`OfflineAgent.scale_rewards`).
        next_obs: ``(batch, obs_dim)`` normalised next observations.
        not_done: ``(batch,)`` ``1 - terminated``: truncated transitions still bootstrap.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    not_done: torch.Tensor


BatchT = TypeVar("BatchT")


def _mean_std(x: np.ndarray, chunk: int = 1 << 16) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of ``(n, d)`` in chunks (no full-size temporary), std floored at 1e-3."""
    total = np.zeros(x.shape[1], np.float64)
    sq = np.zeros(x.shape[1], np.float64)
    for i in range(0, len(x), chunk):
        part = x[i : i + chunk].astype(np.float64)
        total += part.sum(0)
        sq += np.square(part).sum(0)
    mean = total / len(x)
    std = np.sqrt(np.maximum(sq / len(x) - mean**2, 0.0)) + 1e-3
    return mean.astype(np.float32), std.astype(np.float32)


def adam(params: Any, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel (one call per step for all parameters, on CPU and GPU)."""
    return torch.optim.Adam(params, lr=float(lr), fused=True)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group (a schedule's value for the coming step)."""
    for group in optimizer.param_groups:
        group["lr"] = float(lr)


def time_limit(data: ds.Episodes) -> int | None:
    """The env's ``max_episode_steps`` the data was collected with (Minari's ``env_spec``), ``None`` if unknown."""
    import json

    spec = data.metadata.get("env_spec")
    if isinstance(spec, str):
        with contextlib.suppress(ValueError):
            spec = json.loads(spec)
    limit = spec.get("max_episode_steps") if isinstance(spec, dict) else None
    if limit is None:
        limit = ((data.metadata.get(ds.META) or {}).get("env") or {}).get("max_episode_steps")
    return int(limit) if limit else None


def complete_episodes(data: ds.Episodes) -> np.ndarray:
    """``(episodes,)`` bool: the episodes that ran to their end (a return, not a piece of one).

    An episode is complete when its last step terminated, or when it was truncated at the env's time
    limit (:func:`time_limit`). A piece cut short by a collection budget (``collect.py steps=N``) is
    stored truncated too, but shorter than the limit: it is not complete. Without a known time limit
    every truncated episode counts as complete.
    """
    ends = data.episode_starts[1:] - 1
    lengths = np.diff(data.episode_starts)
    limit = time_limit(data)
    timed_out = data.truncations[ends] if limit is None else data.truncations[ends] & (lengths >= limit)
    return np.asarray(data.terminations[ends] | timed_out, dtype=bool)


class OfflineAgent(Agent, Generic[BatchT]):
    """Base of the offline agents (module docstring).

    Args:
        observation_space: The env's observation space (Box or Discrete; flattened).
        action_space: The env's action space (bounded Box or Discrete).
        seed: Seeds network initialisation, minibatch sampling and sampled actions.
        device: ``cpu``, ``cuda`` ...
        batch_size: Minibatch size.
        hidden: Hidden layer sizes of every network.
        normalize_obs: Standardise observations with the dataset's mean and std.
        log_every: Gradient steps between rows of ``train.csv``.

    Raises:
        ConfigError: Unsupported action space or a bad batch size.
    """

    name = "offline"

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        seed: int = 0,
        device: str = "cpu",
        batch_size: int = 256,
        hidden: Sequence[int] = (256, 256),
        normalize_obs: bool = True,
        log_every: int = 1000,
    ) -> None:
        if not isinstance(action_space, (gym.spaces.Box, gym.spaces.Discrete)):
            raise ConfigError(f"agent={self.name} supports Box or Discrete actions, not {action_space}")
        if int(batch_size) < 1:
            raise ConfigError(f"agent.batch_size={batch_size!r} must be >= 1")
        self.observation_space, self.action_space = observation_space, action_space
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.hidden = tuple(int(h) for h in hidden)
        self.log_every = max(1, int(log_every))
        self.normalize_obs = bool(normalize_obs)
        self.scaler = ActionScaler(action_space)
        self.obs_dim = int(np.prod(observation_space.shape)) if observation_space.shape else 1
        self.obs_mean = torch.zeros(self.obs_dim, device=self.device)
        self.obs_std = torch.ones(self.obs_dim, device=self.device)
        self.seed = int(seed)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.seed)
        self.act_generator = torch.Generator(device=self.device)
        self.act_generator.manual_seed(self.seed + 1)
        self._step = 0
        self.budget = 0
        self.size = 0
        self.dataset_id: str | None = None
        self.dataset_info: dict[str, Any] = {}
        self.reward_stats: dict[str, float] = {}
        self.ref_scores: tuple[float | None, float | None] = (None, None)

    @classmethod
    def requirements(cls, config: Mapping[str, Any]) -> Requirements:
        """Box or Discrete actions, and a dataset."""
        return Requirements(
            action_spaces=(gym.spaces.Box, gym.spaces.Discrete),
            dataset=True,
            hint="make one with experiments/collect.py",
        )

    # --- data ----------------------------------------------------------------------------------

    def set_dataset(self, data: ds.Episodes) -> None:
        """Take labelled episodes to learn from (module docstring); Box actions are rescaled in place.

        Raises:
            ConfigError: The data's spaces are not the env's.
        """
        ds.check_spaces(data, self.observation_space, self.action_space)
        self.dataset_id = data.dataset_id
        self.dataset_info = self._dataset_info(data)
        self.reward_stats = {"reward_mean": float(data.rewards.mean()), "reward_std": float(data.rewards.std())}
        self.ref_scores = data.reference_scores
        if self.scaler.box:
            np.clip((data.actions - self.scaler.center) / self.scaler.half, -1.0, 1.0, out=data.actions)  # in place
        obs = data.observations.reshape(data.observations.shape[0], -1)
        if self.normalize_obs:
            mean, std = _mean_std(obs)
            self.obs_mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
            self.obs_std = torch.as_tensor(std, dtype=torch.float32, device=self.device)
        self._obs = torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32)).to(self.device)
        self._obs_index = torch.from_numpy(data.obs_index).to(self.device)
        act = data.actions if self.scaler.box else data.actions.reshape(-1)
        self._actions = torch.from_numpy(act).to(self.device)
        self._rewards = torch.from_numpy(self.scale_rewards(data, data.rewards)).to(self.device)
        self._not_done = torch.from_numpy((~data.terminations).astype(np.float32)).to(self.device)
        self.size = len(data)
        self.prepare(data)

    @staticmethod
    def _dataset_info(data: ds.Episodes) -> dict[str, Any]:
        returns = data.episode_returns()
        lo, hi = data.reference_scores
        return {
            "id": data.dataset_id,
            "transitions": len(data),
            "episodes": data.num_episodes,
            "return_mean": float(returns.mean()) if len(returns) else None,
            "return_max": float(returns.max()) if len(returns) else None,
            "ref_min_score": lo,
            "ref_max_score": hi,
            "recipe": (data.metadata.get(ds.META) or {}).get("recipe"),
            "labels": f"provider:{data.labelled_by}" if data.labelled_by else "stored",
        }

    def scale_rewards(self, data: ds.Episodes, rewards: np.ndarray) -> np.ndarray:
        """Rewards as the algorithm trains on them (subclasses rescale, e.g. IQL); float32 ``(steps,)``."""
        return np.ascontiguousarray(rewards, dtype=np.float32)

    def prepare(self, data: ds.Episodes) -> None:
        """Read what else the algorithm needs from the data (e.g. CPL's preference pairs); default nothing."""

    @contextlib.contextmanager
    def seeded_init(self) -> Iterator[None]:
        """Build networks inside this: their initialisation follows ``seed`` without touching the global RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            yield

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """``(batch, obs_dim)`` observations standardised with the dataset's statistics."""
        return (obs - self.obs_mean) / self.obs_std

    def sample(self) -> BatchT:
        """A uniform minibatch of transitions (:class:`Batch`); subclasses that learn from other units override."""
        idx = torch.randint(self.size, (self.batch_size,), generator=self.generator, device=self.device)
        rows = self._obs_index[idx]
        return Batch(  # type: ignore[return-value]
            obs=self.normalize(self._obs[rows]),
            actions=self._actions[idx],
            rewards=self._rewards[idx],
            next_obs=self.normalize(self._obs[rows + 1]),
            not_done=self._not_done[idx],
        )

    # --- the interface ---------------------------------------------------------------------------

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]

    def update(self, batch: BatchT) -> Mapping[str, torch.Tensor]:
        """One gradient step; returns ``loss_*`` (and other) statistics as 0-d tensors.

        ``self.num_steps`` steps were taken before this one, of ``self.budget`` in all (the schedules' clock).
        """
        raise NotImplementedError

    def extra_state(self) -> dict[str, Any]:
        """What else a subclass must checkpoint to resume exactly (e.g. CPL's phase); default nothing."""
        return {}

    def load_extra_state(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`extra_state` from a checkpoint (``{}`` for a checkpoint that has none)."""

    @property
    def policy(self) -> Policy:
        """The network :meth:`act` uses: ``modules["actor"]``, built by :func:`~agents.offline.nets.make_policy`."""
        return cast(Policy, self.modules["actor"])

    @property
    @override
    def num_steps(self) -> int:
        return self._step

    def reference_scores(self) -> tuple[float | None, float | None]:
        """``(random, expert)`` mean returns of the dataset's env, for normalised scores."""
        return self.ref_scores

    @override
    def train(self, steps: int, callback: TrainCallback) -> None:
        if self.size == 0:
            raise RuntimeError(f"agent={self.name} has no data: call set_dataset(...) before train()")
        self.budget = int(steps)  # the schedules' length: the run's budget, also after a resume with a larger one
        for m in self.modules.values():
            m.train()
        sums: dict[str, torch.Tensor] = {}
        count = 0
        while self._step < steps:
            stats = self.update(self.sample())
            self._step += 1
            count += 1
            for k, v in stats.items():
                sums[k] = sums[k] + v.detach() if k in sums else v.detach()
            if self._step % self.log_every == 0 or self._step == steps:
                callback.on_log(self._step, {k: float(v) / count for k, v in sums.items()})
                sums, count = {}, 0
            if not callback.on_step(self._step):
                break
        for m in self.modules.values():
            m.eval()

    @override
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(len(obs), -1), device=self.device)
        was_training = self.policy.training
        self.policy.eval()
        a = self.policy.act(self.normalize(x), deterministic, generator=self.act_generator).cpu().numpy()
        self.policy.train(was_training)
        return self.scaler.to_env(a)

    @override
    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {
            "step": self._step,
            "dataset": self.dataset_id,
            "size": self.size,
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "extra": self.extra_state(),
            "generator": self.generator.get_state(),
            "act_generator": self.act_generator.get_state(),
            "obs_mean": self.obs_mean.cpu(),
            "obs_std": self.obs_std.cpu(),
        }
        tmp = path / "agent.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(path / "agent.pt")

    @override
    def load(self, path: Path) -> None:
        """Restore a checkpoint; with data set (resuming), it must be the data the checkpoint was trained on."""
        file = Path(path) / "agent.pt"
        if not file.exists():
            raise ConfigError(f"{path} holds no offline agent checkpoint (agent.pt)")
        state = torch.load(file, map_location=self.device, weights_only=False)
        if self.size and (state["dataset"] != self.dataset_id or state["size"] != self.size):  # acting only: no data
            raise ConfigError(
                f"checkpoint {path} was trained on dataset {state['dataset']!r} ({state['size']} transitions), "
                f"not {self.dataset_id!r} ({self.size})"
            )
        for k, m in self.modules.items():
            m.load_state_dict(state["modules"][k])
        self.load_extra_state(state.get("extra") or {})
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        # (checkpoints before schedules were closed-form also hold "schedulers": their lengths are ignored)
        self.generator.set_state(state["generator"])
        self.act_generator.set_state(state["act_generator"])
        self.obs_mean = state["obs_mean"].to(self.device)
        self.obs_std = state["obs_std"].to(self.device)
        self._step = int(state["step"])

    @override
    def describe(self) -> dict[str, Any]:
        return {"dataset": self.dataset_info, **self.reward_stats}
