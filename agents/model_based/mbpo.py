"""MBPO: model-based policy optimisation (Janner, Fu, Zhang & Levine, 2019, "When to Trust Your Model").

SAC trained mostly on short model rollouts branched from real states. With ``D_env`` the real
transitions, ``p_theta`` the probabilistic ensemble (:mod:`agents.model_based.dynamics`, the one PETS
uses) and ``pi`` the current SAC policy, every ``model_train_freq`` env steps:

1. fit ``p_theta`` on all of ``D_env`` (held-out early stopping, elites);
2. branch ``rollout_batch_size`` rollouts of length ``k`` from states ``s_0 ~ D_env``:
   ``a_t ~ pi(. | s_t)``, ``s_{t+1} ~ p_theta^{(m_t)}(. | s_t, a_t)`` with ``m_t`` a uniformly random elite
   *per sample and step* (TS1), reward ``r_t = r(s_t, a_t, s_{t+1})`` from the run's reward provider
   (:class:`~agents.model_based.planning.PlanningReward`: MBPO with a given reward, not a learned one),
   ``done_t`` from the env card's termination function; a branch stops when it terminates (the
   terminating transition is kept, with ``done = 1``) and is stored in ``D_model``, a ring buffer that
   keeps the rollouts of the last ``model_retain_epochs`` epochs of ``epoch_length`` env steps.

Every env step (one action of the current ``pi``; uniform random for ``learning_starts`` steps) adds
one real transition to ``D_env`` and, once a model is fitted, makes ``utd`` SAC gradient steps on
minibatches drawn from ``D_env`` with probability ``real_ratio`` and from ``D_model`` otherwise
(per sample, so a batch of ``B`` holds ``Binomial(B, real_ratio)`` real transitions; MBPO: 0.05).

The rollout length is ``rollout_length``, or MBPO's linear schedule ``rollout_schedule = [a, b, k_a, k_b]``:
``k = k_a + clip((step - a) / (b - a), 0, 1) (k_b - k_a)`` (env steps; MBPO's Hopper: epochs 20 -> 100,
lengths 1 -> 15). The theory (the paper's Theorem 4.3) bounds the gap between model and real return
by terms linear in ``k``; short branches from real states keep the compounding error small while
the many model samples (MBPO: 400 per env step, ``utd`` 20) carry the sample efficiency.

SAC is stable-baselines3's (its networks, losses, temperature and ``train(gradient_steps,
batch_size)``); this file collects data, runs the model, and gives SAC a replay buffer
(:class:`MixedReplayBuffer`, a ``ReplayBuffer`` subclass holding ``D_env``) whose ``sample`` mixes
both. Actions are stored scaled to [-1, 1] as SB3 does; the model and the reward see the env's.

Randomness is the agent's own: a numpy generator (exploration, minibatches, branch starts), a torch
generator (model noise, elite choice) and a torch RNG state under which SB3's policy samples
(:func:`torch.random.fork_rng`), all in checkpoints with SAC (SB3's zip), ``D_env``, ``D_model``, the
ensemble and the counters: a resumed run continues exactly as the uninterrupted one.

Defaults (``experiments/conf/agent/mbpo.yaml``) are MBPO's except where a CPU cannot afford them:
``utd`` 10 (MBPO 20), ``rollout_batch_size`` 5000 per fit (MBPO 100 000).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecNormalize
from typing_extensions import override

from agents.base import Agent, Requirements, TrainCallback
from agents.model_based.dynamics import EnsembleDynamics, check_model_settings
from agents.model_based.planning import PlanningReward, model_functions
from agents.sb3 import _load_buffer, _save_buffer, _sb3_key
from envs.cards import EnvCard
from envs.errors import ConfigError
from rewards.base import RewardProvider, TransitionBatch, check_rewards

FIELDS = ("obs", "action", "next_obs", "reward", "done")
HINT = "MBPO's SAC acts in continuous actions; for a discrete-action env use ppo, a2c or dqn"


class ModelBuffer:
    """``D_model``: imagined transitions in a ring buffer of ``capacity`` rows (the oldest overwritten).

    Args:
        capacity: Rows kept.
        obs_dim: Flat observation size.
        action_dim: Flat action size (actions stored scaled to [-1, 1]).
    """

    def __init__(self, capacity: int, obs_dim: int, action_dim: int) -> None:
        self.capacity, self.pos, self.size = int(capacity), 0, 0
        self.obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.action = np.zeros((self.capacity, action_dim), np.float32)
        self.next_obs = np.zeros((self.capacity, obs_dim), np.float32)
        self.reward = np.zeros(self.capacity, np.float32)
        self.done = np.zeros(self.capacity, np.float32)

    def add(
        self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray, reward: np.ndarray, done: np.ndarray
    ) -> None:
        """Append ``(n, obs_dim)``, ``(n, action_dim)``, ``(n, obs_dim)``, ``(n,)``, ``(n,)`` (the last ``capacity`` if more)."""
        n = len(obs)
        start = max(0, n - self.capacity)
        rows = (self.pos + np.arange(n - start)) % self.capacity
        for name, value in zip(FIELDS, (obs, action, next_obs, reward, done), strict=True):
            getattr(self, name)[rows] = value[start:]
        self.pos = int((self.pos + n - start) % self.capacity)
        self.size = min(self.capacity, self.size + n - start)

    def arrays(self) -> dict[str, np.ndarray]:
        """The filled rows in storage order, and ``pos`` (for checkpoints)."""
        out = {k: getattr(self, k)[: self.size] for k in FIELDS}
        return out | {"pos": np.array(self.pos)}

    def load(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore :meth:`arrays`."""
        self.size = len(arrays["obs"])
        for k in FIELDS:
            getattr(self, k)[: self.size] = arrays[k]
        self.pos = int(arrays["pos"])


class MixedReplayBuffer(ReplayBuffer):
    """``D_env``: SB3's replay buffer of real transitions, whose ``sample`` mixes in ``D_model``.

    Each sampled row comes from ``D_model`` with probability ``1 - real_ratio`` (only real rows while
    ``D_model`` is empty). Takes SB3's ``ReplayBuffer`` arguments plus ``real_ratio``; ``model`` and
    ``rng`` are set by :class:`MBPO`.
    """

    def __init__(self, *args: Any, real_ratio: float = 0.05, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.real_ratio = float(real_ratio)
        self.model: ModelBuffer | None = None
        self.rng = np.random.default_rng(0)

    def real_size(self) -> int:
        """Real transitions stored (rows x envs)."""
        return (self.buffer_size if self.full else self.pos) * self.n_envs

    @override
    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        """``batch_size`` transitions, ``Binomial(batch_size, real_ratio)`` of them real; tensors of shape ``(batch, ...)``."""
        model = self.model
        mixed = model is not None and model.size > 0
        n_real = int(self.rng.binomial(batch_size, self.real_ratio)) if mixed else batch_size
        flat = self.rng.integers(0, self.real_size(), size=n_real)
        rows, envs = flat // self.n_envs, flat % self.n_envs
        obs, nxt = self.observations[rows, envs], self.next_observations[rows, envs]
        act = self.actions[rows, envs]
        done = self.dones[rows, envs] * (1 - self.timeouts[rows, envs])  # bootstrap on truncation
        rew = self.rewards[rows, envs]
        if mixed and model is not None:
            idx = self.rng.integers(0, model.size, size=batch_size - n_real)
            shape = (len(idx), *self.obs_shape)
            obs = np.concatenate([obs, model.obs[idx].reshape(shape)])
            nxt = np.concatenate([nxt, model.next_obs[idx].reshape(shape)])
            act = np.concatenate([act, model.action[idx].reshape(len(idx), *act.shape[1:])])
            done = np.concatenate([done, model.done[idx]])
            rew = np.concatenate([rew, model.reward[idx]])
        data = (obs, act, nxt, done.reshape(-1, 1), rew.reshape(-1, 1))
        return ReplayBufferSamples(*(self.to_torch(np.asarray(x, np.float32)) for x in data))


class MBPO(Agent):
    """``agent=mbpo`` (module docstring).

    Subclasses change how actions are chosen and rollouts rewarded through three hooks, each by default
    MBPO's own: :meth:`_rollout_action` (the action of a model rollout), :meth:`_model_reward` (the reward
    stored for an imagined transition) and :meth:`_collect_action` (the action taken in the real env).

    Args:
        env: The training vector env (proxy reward swapped in); Box actions.
        reward: The run's reward provider: rewards of model rollouts.
        card: The env's card: its termination function (bound to the env's kwargs).
        seed: Seeds SAC, the ensemble, exploration and rollouts.
        device: ``cpu``, ``cuda`` or ``auto``.
        real_ratio: Fraction of each SAC minibatch from real data (MBPO: 0.05).
        utd: SAC gradient steps per env step (MBPO: 20).
        batch_size: SAC minibatch size.
        learning_starts: Uniform-random env steps before the first model fit and policy update.
        model_train_freq: Env steps between model fits, each followed by a batch of rollouts (MBPO: 250).
        rollout_batch_size: Rollouts branched per fit (MBPO: 100 000).
        rollout_length: Steps ``k`` per rollout (when no schedule).
        rollout_schedule: ``[start_step, end_step, min_length, max_length]``: ``k`` linear in env steps, or ``None``.
        model_retain_epochs: Epochs of rollouts kept in ``D_model`` (MBPO: 1).
        epoch_length: Env steps per epoch (MBPO: 1000); sizes ``D_model`` only.
        buffer_size: Capacity of ``D_env`` (transitions per env).
        learning_rate: SAC's Adam step size.
        gamma: Discount.
        tau: Target network soft-update rate.
        ent_coef: SAC's temperature; ``auto``: learned towards ``-action_dim``.
        net_arch: SAC's hidden layers (actor and critics).
        ensemble_size: Members of the dynamics ensemble (MBPO: 7).
        model_elites: Members used to predict (MBPO: 5).
        hidden: Hidden layers of each member (MBPO: 4 x 200).
        model_learning_rate: Adam step size of the model.
        model_weight_decay: Adam weight decay of the model.
        model_batch_size: Model minibatch size per member.
        epochs: Most epochs per model fit.
        patience: Epochs without a 1% held-out improvement before a fit stops (MBPO: 5).
        val_ratio: Fraction of real data held out per fit.
        log_every: Env steps between reports of SAC's losses.

    Raises:
        ConfigError: A bad setting, a reward the model cannot compute, or an env with no termination function.
    """

    who = "agent=mbpo"  # how refusals name the agent (a subclass names itself)
    checkpoint_name = "mbpo"  # the agent's own files in a checkpoint: <name>.pt, <name>.json

    def __init__(
        self,
        env: Any,
        reward: RewardProvider,
        card: EnvCard | None = None,
        seed: int = 0,
        device: str = "cpu",
        real_ratio: float = 0.05,
        utd: int = 10,
        batch_size: int = 256,
        learning_starts: int = 1000,
        model_train_freq: int = 250,
        rollout_batch_size: int = 5000,
        rollout_length: int = 1,
        rollout_schedule: Sequence[float] | None = None,
        model_retain_epochs: int = 1,
        epoch_length: int = 1000,
        buffer_size: int = 1_000_000,
        learning_rate: float = 3e-4,
        gamma: float = 0.99,
        tau: float = 0.005,
        ent_coef: str | float = "auto",
        net_arch: Sequence[int] = (256, 256),
        ensemble_size: int = 7,
        model_elites: int = 5,
        hidden: Sequence[int] = (200, 200, 200, 200),
        model_learning_rate: float = 1e-3,
        model_weight_decay: float = 5e-5,
        model_batch_size: int = 256,
        epochs: int = 100,
        patience: int = 5,
        val_ratio: float = 0.2,
        log_every: int = 1000,
    ) -> None:
        space = env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise ConfigError(f"{self.who} needs a Box action space, but this env has {space}; {HINT}")
        positive = dict(utd=utd, batch_size=batch_size, model_train_freq=model_train_freq, rollout_batch_size=rollout_batch_size,
                        rollout_length=rollout_length, model_retain_epochs=model_retain_epochs, epoch_length=epoch_length,
                        buffer_size=buffer_size, ensemble_size=ensemble_size, model_elites=model_elites,
                        model_batch_size=model_batch_size, epochs=epochs, log_every=log_every)  # fmt: skip
        for name, value in positive.items():
            if int(value) <= 0:
                raise ConfigError(f"agent.{name}={value} must be a positive integer")
        if not 0.0 <= float(real_ratio) <= 1.0:
            raise ConfigError(f"agent.real_ratio={real_ratio} must be in [0, 1]")
        check_model_settings(ensemble_size, model_elites, learning_starts, val_ratio)
        if rollout_schedule is not None:
            sched = [float(x) for x in rollout_schedule]
            if len(sched) != 4 or sched[1] <= sched[0] or min(sched[2:]) < 1:
                raise ConfigError(
                    f"agent.rollout_schedule={list(rollout_schedule)} must be [start_step, end_step, min_length, max_length] "
                    "with end_step > start_step and lengths >= 1"
                )
        self.schedule = None if rollout_schedule is None else [float(x) for x in rollout_schedule]
        self.device = get_device(device)
        self.env, self.seed = env, int(seed)
        self.obs_shape, self.action_shape = tuple(env.observation_space.shape), tuple(space.shape)
        self.obs_dim, self.action_dim = int(np.prod(self.obs_shape)), int(np.prod(self.action_shape))
        self.low = torch.as_tensor(space.low.reshape(-1), dtype=torch.float32, device=self.device)
        self.high = torch.as_tensor(space.high.reshape(-1), dtype=torch.float32, device=self.device)

        self.reward_fn, self.termination_fn = model_functions(
            reward, card, env, self.who, f"{self.who} needs the env's termination function to end model rollouts"
        )

        self.real_ratio, self.utd, self.batch_size = float(real_ratio), int(utd), int(batch_size)
        self.learning_starts, self.model_train_freq = int(learning_starts), int(model_train_freq)
        self.rollout_batch_size, self.rollout_length = int(rollout_batch_size), int(rollout_length)
        self.log_every = int(log_every)
        self.fit_args: dict[str, Any] = dict(
            epochs=int(epochs), batch_size=int(model_batch_size), val_ratio=float(val_ratio), patience=int(patience)
        )
        max_k = int(max(self.schedule[2:])) if self.schedule else self.rollout_length
        capacity = int(model_retain_epochs) * max(1, int(epoch_length) // self.model_train_freq)
        capacity *= self.rollout_batch_size * max_k
        self.model_buffer = ModelBuffer(capacity, self.obs_dim, self.action_dim)

        self.sac = SAC(
            "MlpPolicy", env, learning_rate=float(learning_rate), buffer_size=int(buffer_size), learning_starts=0,
            batch_size=self.batch_size, tau=float(tau), gamma=float(gamma), ent_coef=ent_coef,
            policy_kwargs={"net_arch": [int(h) for h in net_arch]}, replay_buffer_class=MixedReplayBuffer,
            replay_buffer_kwargs={"real_ratio": self.real_ratio}, seed=self.seed, device=self.device, verbose=0,
        )  # fmt: skip
        self.sac.set_logger(Logger(folder=None, output_formats=[]))
        self.real: MixedReplayBuffer = self.sac.replay_buffer  # type: ignore[assignment]
        self.real.model = self.model_buffer
        self.rng = np.random.default_rng(self.seed)
        self.real.rng = np.random.default_rng([self.seed, 1])
        init = torch.Generator().manual_seed(self.seed)
        self.model = EnsembleDynamics(self.obs_dim, self.action_dim, ensemble_size, model_elites, hidden,
                                      model_learning_rate, model_weight_decay, init, self.device)  # fmt: skip
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        self.torch_rng = self._fresh_torch_rng(self.seed + 2)
        self._steps, self._last_log = 0, 0
        self._last_fit: int | None = None
        self._obs: np.ndarray | None = None

    @classmethod
    def requirements(cls, config: Mapping[str, Any]) -> Requirements:
        """Box actions; the first model fit and SAC update come after ``learning_starts`` random steps."""
        starts = int(config.get("learning_starts", 1000))
        return Requirements(
            action_spaces=(gym.spaces.Box,),
            hint=HINT,
            label="MBPO",
            first_update=starts + 1,
            imagined_rewards=True,
            first_update_why=f"it acts at random for agent.learning_starts={starts} steps before fitting its model",
        )

    # --- randomness of SB3's policy ----------------------------------------------------------------

    def _fresh_torch_rng(self, seed: int) -> dict[str, torch.Tensor]:
        state = {"cpu": torch.Generator().manual_seed(seed).get_state()}
        if self.device.type == "cuda":
            with torch.random.fork_rng(devices=[self.device]):
                torch.cuda.manual_seed(seed)
                state["cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    @contextmanager
    def _policy_rng(self, state: dict[str, torch.Tensor]) -> Iterator[None]:
        """Run SB3 (which samples from torch's global RNG) on the agent's own RNG ``state``, updated in place."""
        cuda = self.device.type == "cuda"
        with torch.random.fork_rng(devices=[self.device] if cuda else []):
            torch.set_rng_state(state["cpu"])
            if cuda:
                torch.cuda.set_rng_state(state["cuda"], self.device)
            try:
                yield
            finally:
                state["cpu"] = torch.get_rng_state()
                if cuda:
                    state["cuda"] = torch.cuda.get_rng_state(self.device)

    # --- model rollouts ----------------------------------------------------------------------------

    def current_rollout_length(self) -> int:
        """``k`` at the current env step (module docstring)."""
        if self.schedule is None:
            return self.rollout_length
        a, b, ka, kb = self.schedule
        frac = min(max((self._steps - a) / (b - a), 0.0), 1.0)
        return int(ka + frac * (kb - ka))

    def _unscale(self, scaled: torch.Tensor) -> torch.Tensor:
        return self.low + 0.5 * (scaled + 1.0) * (self.high - self.low)

    @torch.no_grad()
    def rollout(self) -> dict[str, float]:
        """Branch ``rollout_batch_size`` model rollouts from real states into ``D_model``.

        Returns:
            ``model_rollout_transitions`` stored and ``model_rollout_reward`` (their mean reward).
        """
        flat = self.rng.integers(0, self.real.real_size(), size=self.rollout_batch_size)
        rows, envs = flat // self.real.n_envs, flat % self.real.n_envs
        state = torch.as_tensor(
            self.real.observations[rows, envs].reshape(len(flat), -1), dtype=torch.float32, device=self.device
        )
        elites = len(self.model.elites)
        stored, total = 0, 0.0
        for _ in range(self.current_rollout_length()):
            n = len(state)
            scaled = self._rollout_action(state)
            action = self._unscale(scaled)
            every = self.model.sample(state.expand(elites, -1, -1), action.expand(elites, -1, -1), self.generator)
            pick = torch.randint(elites, (n,), generator=self.generator, device=self.device)  # TS1
            nxt = every[pick, torch.arange(n, device=self.device)]
            r = self._model_reward(state, action, nxt)
            done = self.termination_fn(state, action, nxt).to(torch.bool).reshape(n)
            ok = torch.isfinite(nxt).all(-1) & torch.isfinite(r)
            rows_np = [x[ok].cpu().numpy() for x in (state, scaled, nxt, r, done.float())]
            self.model_buffer.add(*rows_np)
            stored, total = stored + len(rows_np[0]), total + float(r[ok].sum())
            state = nxt[ok & ~done]
            if len(state) == 0:
                break
        return {"model_rollout_transitions": float(stored), "model_rollout_reward": total / max(stored, 1)}

    def _rollout_action(self, state: torch.Tensor) -> torch.Tensor:
        """A model rollout's action at ``state`` ``(n, obs_dim)``: ``(n, action_dim)`` in [-1, 1] (MBPO: ``a ~ pi``)."""
        n = len(state)
        with self._policy_rng(self.torch_rng):
            return self.sac.actor(state.reshape(n, *self.obs_shape), deterministic=False).reshape(n, -1)

    def _model_reward(self, state: torch.Tensor, action: torch.Tensor, next_state: torch.Tensor) -> torch.Tensor:
        """The stored reward of imagined ``(n, obs_dim), (n, action_dim), (n, obs_dim)`` -> ``(n,)`` (MBPO: the provider's)."""
        return self.reward_fn(state, action, next_state)

    def _collect_action(self, obs: np.ndarray) -> np.ndarray:
        """The real env's action after the warm-up: ``(n_envs, *obs_shape)`` -> ``(n_envs, *action_shape)`` (MBPO: ``a ~ pi``)."""
        with self._policy_rng(self.torch_rng):
            actions, _ = self.sac.predict(obs, deterministic=False)
        return actions

    def _fit_and_rollout(self, callback: TrainCallback) -> None:
        size = self.real.real_size()
        rows, envs = np.divmod(np.arange(size), self.real.n_envs)
        obs = self.real.observations[rows, envs].reshape(size, -1)
        nxt = self.real.next_observations[rows, envs].reshape(size, -1)
        action = self.sac.policy.unscale_action(self.real.actions[rows, envs].reshape(size, -1))
        stats = self.model.fit(obs, action, nxt, self.rng, **self.fit_args)
        self._last_fit = self._steps
        stats |= self.rollout()
        callback.on_log(
            self._steps, {**stats, "model_data": float(size), "model_buffer": float(self.model_buffer.size)}
        )

    # --- the agent interface -----------------------------------------------------------------------

    @property
    @override
    def num_steps(self) -> int:
        return self._steps

    @override
    def train(self, steps: int, callback: TrainCallback) -> None:
        while self._steps < steps:
            if self._obs is None:  # (after a load: a new episode)
                self._obs = self.env.reset()
            if self._steps >= max(self.learning_starts, 2) and (
                self._last_fit is None or self._steps - self._last_fit >= self.model_train_freq
            ):
                self._fit_and_rollout(callback)
            obs = np.asarray(self._obs)
            if self._steps < self.learning_starts:
                space = self.env.action_space
                actions = self.rng.uniform(space.low, space.high, size=(len(obs), *space.shape)).astype(space.dtype)
            else:
                actions = self._collect_action(obs)
            next_obs, rewards, dones, infos = self.env.step(actions)
            real_next = np.array(next_obs, dtype=np.float32, copy=True)
            for i in np.flatnonzero(dones):
                real_next[i] = infos[i]["terminal_observation"]
            self.real.add(obs, real_next, self.sac.policy.scale_action(actions), rewards, dones, infos)
            self._obs = next_obs
            self._steps += len(obs)
            if self._last_fit is not None:
                with self._policy_rng(self.torch_rng):
                    self.sac.train(gradient_steps=self.utd * len(obs), batch_size=self.batch_size)
                if self._steps - self._last_log >= self.log_every:
                    self._log(callback)
            if not callback.on_step(self._steps):
                break

    def _log(self, callback: TrainCallback) -> None:
        logger = self.sac.logger
        values = {
            _sb3_key(k): float(v) for k, v in logger.name_to_value.items() if isinstance(v, (int, float, np.number))
        }
        logger.dump(self._steps)  # clears SB3's means
        callback.on_log(self._steps, {k: v for k, v in values.items() if k is not None})
        self._last_log = self._steps

    @override
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """SAC's action (its mean when ``deterministic``; else a sample from a stream fixed by seed and step)."""
        state = self._fresh_torch_rng(self.seed * 1_000_003 + self._steps + 7)
        with self._policy_rng(state):
            actions, _ = self.sac.predict(np.asarray(obs), deterministic=deterministic)
        return actions

    def relabel(self, reward: RewardProvider, chunk: int = 65536) -> None:
        """Recompute the stored rewards, real and imagined, with ``reward`` (a learned reward that changed).

        Real transitions are scored as the env made them (``env_reward`` NaN: SB3 does not store it);
        model transitions through the planning path (:class:`PlanningReward`), as the rollouts were.
        """
        size, n_envs = self.real.real_size(), self.real.n_envs
        for start in range(0, size, chunk):
            rows, envs = np.divmod(np.arange(start, min(start + chunk, size)), n_envs)
            done, n = self.real.dones[rows, envs] > 0, len(rows)
            cut = done & (self.real.timeouts[rows, envs] > 0)
            batch = TransitionBatch(
                obs=self.real.observations[rows, envs].reshape(n, *self.obs_shape),
                action=self.sac.policy.unscale_action(self.real.actions[rows, envs].reshape(n, -1)).reshape(
                    n, *self.action_shape
                ),
                next_obs=self.real.next_observations[rows, envs].reshape(n, *self.obs_shape),
                env_reward=np.full(n, np.nan, np.float32),
                terminated=done & ~cut,
                truncated=cut,
            )
            self.real.rewards[rows, envs] = check_rewards(reward.reward(batch), n, type(reward).__name__)
        fn = PlanningReward(reward, self.reward_fn.env_reward, self.reward_fn.termination, self.who,
                            self.obs_shape, self.action_shape)  # fmt: skip
        m = self.model_buffer
        for start in range(0, m.size, chunk):
            part = slice(start, min(start + chunk, m.size))
            obs, scaled, nxt = (torch.as_tensor(x[part], device=self.device) for x in (m.obs, m.action, m.next_obs))
            with torch.no_grad():
                m.reward[part] = fn(obs, self._unscale(scaled), nxt).cpu().numpy()

    # --- checkpoints -------------------------------------------------------------------------------

    @override
    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.sac.save(path / "sac.zip")  # policy, optimisers, temperature (SB3 leaves the buffer out)
        _save_buffer(self.real, path / "replay_buffer.npz")
        np.savez(path / "model_buffer.npz", **self.model_buffer.arrays())  # type: ignore[arg-type]
        torch.save(
            {"model": self.model.full_state(), "generator": self.generator.get_state(), "torch_rng": self.torch_rng},
            path / f"{self.checkpoint_name}.pt",
        )
        meta = {
            "steps": self._steps, "last_fit": self._last_fit, "last_log": self._last_log, "seed": self.seed,
            "rng": self.rng.bit_generator.state, "sample_rng": self.real.rng.bit_generator.state,
            "n_updates": self.sac._n_updates,
        }  # fmt: skip
        (path / f"{self.checkpoint_name}.json").write_text(json.dumps(meta))

    @override
    def load(self, path: Path) -> None:
        path = Path(path)
        try:
            _, params, variables = load_from_zip_file(path / "sac.zip", device=self.device)
            assert params is not None
            self.sac.set_parameters(params, exact_match=True, device=self.device)
            state = torch.load(path / f"{self.checkpoint_name}.pt", map_location=self.device, weights_only=False)
            self.model.load_full_state(state["model"])
        except (RuntimeError, ValueError, FileNotFoundError) as exc:
            raise ConfigError(f"checkpoint {path} does not fit this agent: {str(exc).splitlines()[0]}") from exc
        for name, value in (variables or {}).items():  # the temperature, as SB3's own load restores it
            getattr(self.sac, name).data.copy_(value.data)
        _load_buffer(self.real, path / "replay_buffer.npz")
        with np.load(path / "model_buffer.npz") as arrays:
            self.model_buffer.load(arrays)
        self.generator.set_state(state["generator"])
        self.torch_rng = {k: v.cpu() for k, v in state["torch_rng"].items()}
        meta = json.loads((path / f"{self.checkpoint_name}.json").read_text())
        self._steps, self._last_fit, self._last_log = int(meta["steps"]), meta["last_fit"], int(meta["last_log"])
        self.seed, self.sac._n_updates = int(meta["seed"]), int(meta["n_updates"])
        self.rng.bit_generator.state = meta["rng"]
        self.real.rng.bit_generator.state = meta["sample_rng"]
        self._obs = None  # the runner starts new episodes after a resume

    @override
    def describe(self) -> dict[str, Any]:
        return {
            "model_elites": self.model.elites.tolist(),
            "real_transitions": self.real.real_size(),
            "model_transitions": self.model_buffer.size,
        }

    @override
    def close(self) -> None:
        self.env.close()
