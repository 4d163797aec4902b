"""What every offline agent shares: the dataset on the device, relabelling, sampling, the training loop.

An offline agent (``agent=iql``, ``agent=bc``) learns from a fixed Minari dataset
(``dataset=<id>``, see :mod:`agents.offline.dataset`) and is evaluated in the env by the runner
like any other agent. Building one:

1. loads the dataset flat (observations stored once) and refuses one whose spaces differ from the env's;
2. labels it with the run's reward provider (``reward=``): the provider scores every transition
   in chunks, with the env's true reward as ``env_reward``, so ``reward=env`` trains on the true
   reward and any other provider on its proxy. ``labels=stored`` instead trains on the rewards
   stored in the dataset by ``experiments/relabel.py`` (for providers too slow to run per run);
3. moves observations, actions and labels to the device once (on the CPU ``torch.from_numpy``
   shares the arrays, so a dataset is held in memory once) and samples minibatches by index;
   observation normalisation is applied per minibatch, not to a second copy of the data.

Subclasses implement :meth:`OfflineAgent.update` (one gradient step on a :class:`Batch`, returning
``loss_*`` tensors) and the ``modules`` / ``optimizers`` they own; ``steps=`` counts gradient steps.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from agents.base import Agent, TrainCallback
from agents.offline import dataset as ds
from agents.offline.nets import ActionScaler
from envs.errors import ConfigError
from rewards.base import RewardProvider, check_rewards

log = logging.getLogger("rewardlab")
LABELS = ("provider", "stored")


@dataclass
class Batch:
    """A minibatch on the device: ``obs``/``next_obs`` normalised, ``(batch, ...)`` each."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    not_done: torch.Tensor  # 1 - terminated: truncated transitions still bootstrap


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


def label(
    data: ds.OfflineData, provider: RewardProvider, chunk: int = 65536, components: dict[str, np.ndarray] | None = None
) -> np.ndarray:
    """``(steps,)`` float32 rewards from ``provider`` over the whole dataset, in chunks.

    Args:
        data: The dataset (its true reward is the batches' ``env_reward``).
        provider: The reward provider, already bound to the dataset's spaces.
        chunk: Transitions per provider call.
        components: If given, filled with the provider's named components, ``{name: (steps,)}``.
    """
    import sys

    from tqdm import tqdm

    out = np.empty(len(data), dtype=np.float32)
    source = type(provider).__name__
    show = sys.stderr.isatty() and len(data) > 4 * chunk
    with tqdm(total=len(data), desc=f"labelling with {source}", unit="transition", disable=not show) as bar:
        for sl, batch in data.transition_batches(chunk):
            out[sl] = check_rewards(provider.reward(batch), len(batch), source=source)
            if components is not None:
                for k, v in provider.last_components.items():
                    components.setdefault(k, np.zeros(len(data), dtype=np.float32))[sl] = v
            bar.update(len(batch))
    return out


class OfflineAgent(Agent):
    """Base of the offline agents (module docstring).

    Args:
        env: The run's (reward-wrapped) vector env: its spaces and its reward provider are used, it is never stepped.
        seed: Seeds network initialisation and minibatch sampling.
        device: ``cpu``, ``cuda`` ...
        dataset: The dataset id (``dataset=`` on the command line).
        dataset_root: Where datasets live (null: ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``).
        labels: ``provider`` (label with the run's ``reward=``) or ``stored`` (the dataset's rewards).
        batch_size: Minibatch size.
        hidden: Hidden layer sizes of every network.
        normalize_obs: Standardise observations with the dataset's mean and std.
        log_every: Gradient steps between rows of ``train.csv``.
    """

    name = "offline"

    def __init__(
        self,
        env: Any,
        seed: int = 0,
        device: str = "cpu",
        dataset: str | None = None,
        dataset_root: str | None = None,
        labels: str = "provider",
        batch_size: int = 256,
        hidden: Sequence[int] = (256, 256),
        normalize_obs: bool = True,
        log_every: int = 1000,
    ) -> None:
        if not dataset:
            local = ds.list_datasets(dataset_root)
            raise ConfigError(
                f"agent={self.name} learns from a dataset: give dataset=<id>; local datasets under "
                f"{ds.dataset_root(dataset_root)}: {', '.join(local) or 'none'} (make one with experiments/collect.py)"
            )
        if labels not in LABELS:
            raise ConfigError(f"agent.labels={labels!r} must be one of {', '.join(LABELS)}")
        if int(batch_size) < 1:
            raise ConfigError(f"agent.batch_size={batch_size!r} must be >= 1")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.hidden = tuple(int(h) for h in hidden)
        self.log_every = max(1, int(log_every))
        self.observation_space: gym.Space = env.observation_space
        self.action_space: gym.Space = env.action_space
        if not isinstance(self.action_space, (gym.spaces.Box, gym.spaces.Discrete)):
            raise ConfigError(f"agent={self.name} supports Box or Discrete actions, not {self.action_space}")
        provider: RewardProvider | None = getattr(env, "provider", None)

        data = ds.load(
            dataset, dataset_root, frames=bool(provider is not None and provider.needs_frames and labels == "provider")
        )
        ds.check_spaces(data, self.observation_space, self.action_space)
        self.dataset_id = dataset
        self.dataset_info = self._dataset_info(data, labels, provider)
        rewards = self._labels(data, labels, provider)
        self.reward_stats = {"reward_mean": float(rewards.mean()), "reward_std": float(rewards.std())}
        self.ref_scores = data.reference_scores

        self.scaler = ActionScaler(self.action_space)
        if isinstance(self.action_space, gym.spaces.Box):
            np.clip((data.actions - self.scaler.center) / self.scaler.half, -1.0, 1.0, out=data.actions)  # in place
        obs = data.observations.reshape(data.observations.shape[0], -1)
        self.obs_dim = int(obs.shape[1])
        if normalize_obs:
            mean, std = _mean_std(obs)
        else:
            mean, std = np.zeros(self.obs_dim, np.float32), np.ones(self.obs_dim, np.float32)
        self.obs_mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
        self.obs_std = torch.as_tensor(std, dtype=torch.float32, device=self.device)
        self._obs = torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32)).to(self.device)
        self._obs_index = torch.from_numpy(data.obs_index).to(self.device)
        act = data.actions if isinstance(self.action_space, gym.spaces.Box) else data.actions.reshape(-1)
        self._actions = torch.from_numpy(act).to(self.device)
        self._rewards = torch.from_numpy(self.scale_rewards(data, rewards)).to(self.device)
        self._not_done = torch.from_numpy((~data.terminations).astype(np.float32)).to(self.device)
        self.size = len(data)
        del data, obs, rewards

        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))
        self.act_generator = torch.Generator(device=self.device)
        self.act_generator.manual_seed(int(seed) + 1)
        self.seed = int(seed)
        self._step = 0

    # --- data ----------------------------------------------------------------------------------

    def _labels(self, data: ds.OfflineData, labels: str, provider: RewardProvider | None) -> np.ndarray:
        if labels == "stored":
            stored_by = (data.metadata.get(ds.META) or {}).get("labels")
            if stored_by and provider is not None and stored_by.get("provider") != type(provider).__name__:
                raise ConfigError(
                    f"labels=stored: dataset {data.dataset_id!r} was labelled by {stored_by.get('provider')} "
                    f"({stored_by.get('reward')}), but this run evaluates the proxy with {type(provider).__name__}; "
                    "give the reward= the dataset was relabelled with, or labels=provider"
                )
            return data.rewards
        if provider is None:
            return data.true_rewards
        return label(data, provider)

    @staticmethod
    def _dataset_info(data: ds.OfflineData, labels: str, provider: RewardProvider | None) -> dict[str, Any]:
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
            "labels": labels if labels == "stored" else f"provider:{type(provider).__name__ if provider else 'none'}",
        }

    def scale_rewards(self, data: ds.OfflineData, rewards: np.ndarray) -> np.ndarray:
        """Rewards as the algorithm trains on them (subclasses rescale, e.g. IQL); float32 ``(steps,)``."""
        return np.ascontiguousarray(rewards, dtype=np.float32)

    @contextlib.contextmanager
    def seeded_init(self) -> Iterator[None]:
        """Build networks inside this: their initialisation follows ``seed`` without touching the global RNG."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            yield

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def sample(self) -> Batch:
        """A uniform minibatch of transitions."""
        idx = torch.randint(self.size, (self.batch_size,), generator=self.generator, device=self.device)
        rows = self._obs_index[idx]
        return Batch(
            obs=self.normalize(self._obs[rows]),
            actions=self._actions[idx],
            rewards=self._rewards[idx],
            next_obs=self.normalize(self._obs[rows + 1]),
            not_done=self._not_done[idx],
        )

    # --- the interface ---------------------------------------------------------------------------

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, Any] = {}  # noqa: RUF012  (replaced per instance)

    def update(self, batch: Batch) -> Mapping[str, torch.Tensor]:
        """One gradient step; returns ``loss_*`` (and other) statistics as 0-d tensors."""
        raise NotImplementedError

    @property
    def policy(self) -> nn.Module:
        return self.modules["actor"]

    @property
    def num_steps(self) -> int:
        return self._step

    def reference_scores(self) -> tuple[float | None, float | None]:
        """``(random, expert)`` mean returns of the dataset's env, for normalised scores."""
        return self.ref_scores

    def train(self, steps: int, callback: TrainCallback) -> None:
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

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(len(obs), -1), device=self.device)
        was_training = self.policy.training
        self.policy.eval()
        a = self.policy.act(self.normalize(x), deterministic, generator=self.act_generator).cpu().numpy()
        self.policy.train(was_training)
        return self.scaler.to_env(a)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {
            "step": self._step,
            "dataset": self.dataset_id,
            "size": self.size,
            "modules": {k: m.state_dict() for k, m in self.modules.items()},
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "generator": self.generator.get_state(),
            "act_generator": self.act_generator.get_state(),
            "obs_mean": self.obs_mean.cpu(),
            "obs_std": self.obs_std.cpu(),
        }
        tmp = path / "agent.pt.tmp"
        torch.save(state, tmp)
        tmp.replace(path / "agent.pt")

    def load(self, path: Path) -> None:
        file = Path(path) / "agent.pt"
        if not file.exists():
            raise ConfigError(f"{path} holds no offline agent checkpoint (agent.pt)")
        state = torch.load(file, map_location=self.device, weights_only=False)
        if state["dataset"] != self.dataset_id or state["size"] != self.size:
            raise ConfigError(
                f"checkpoint {path} was trained on dataset {state['dataset']!r} ({state['size']} transitions), "
                f"not {self.dataset_id!r} ({self.size})"
            )
        for k, m in self.modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        for k, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][k])
        self.generator.set_state(state["generator"])
        self.act_generator.set_state(state["act_generator"])
        self.obs_mean = state["obs_mean"].to(self.device)
        self.obs_std = state["obs_std"].to(self.device)
        self._step = int(state["step"])

    def describe(self) -> dict[str, Any]:
        return {"dataset": self.dataset_info, **self.reward_stats}
