"""stable-baselines3 algorithms (PPO, A2C, DQN, SAC, TD3) behind the :class:`agents.base.Agent` interface.

A thin adapter: SB3 does the learning; this file translates the config
(``experiments/conf/agent/<algo>.yaml``, per-env values in ``experiments/conf/tuned/``) into SB3
arguments, reports SB3's losses as ``loss_*``, stops exactly at the step budget, and saves what
SB3's own ``save`` leaves out (replay buffer, compactly; ``VecNormalize`` statistics).

Config conventions borrowed from RL-Zoo: ``"lin_<x>"`` for a learning rate or clip range that
decays linearly from ``x`` to 0; ``policy_kwargs.activation_fn`` by name (``relu``, ``tanh`` ...);
``action_noise: {type: normal, std: 0.1}`` for TD3.
"""

from __future__ import annotations

import difflib
import inspect
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import KVWriter, Logger
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.utils import LinearSchedule
from stable_baselines3.common.vec_env import VecEnv, VecNormalize
from typing_extensions import override

from agents.base import Agent, Requirements, TrainCallback, check_number_settings
from envs.errors import ConfigError

if TYPE_CHECKING:
    from envs.cards import EnvCard
from rewards.base import LearnedReward, RewardProvider, TransitionBatch, check_rewards

ALGOS: dict[str, type[BaseAlgorithm] | str] = {
    "PPO": PPO,
    "A2C": A2C,
    "DQN": DQN,
    "SAC": SAC,
    "TD3": TD3,
    "MaskablePPO": "sb3_contrib:MaskablePPO",  # imported when used (the jobshop extra)
}
#: Env features an algorithm needs (:attr:`envs.cards.EnvCard.features`).
FEATURES: dict[str, frozenset[str]] = {"MaskablePPO": frozenset({"action_masks"})}
ACTION_SPACES: dict[str, tuple[type[gym.Space], ...]] = {
    "PPO": (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary),
    "MaskablePPO": (gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary),
    "A2C": (gym.spaces.Box, gym.spaces.Discrete, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary),
    "DQN": (gym.spaces.Discrete,),
    "SAC": (gym.spaces.Box,),
    "TD3": (gym.spaces.Box,),
}
ACTIVATIONS: dict[str, type[torch.nn.Module]] = {
    "relu": torch.nn.ReLU,
    "tanh": torch.nn.Tanh,
    "elu": torch.nn.ELU,
    "leaky_relu": torch.nn.LeakyReLU,
    "gelu": torch.nn.GELU,
    "silu": torch.nn.SiLU,
}
NOISES = {"normal": NormalActionNoise, "ornstein_uhlenbeck": OrnsteinUhlenbeckActionNoise}
SCHEDULED = ("learning_rate", "clip_range", "clip_range_vf")
#: SB3 arguments the runner sets itself, and what to give instead.
RUN_SET = {
    "seed": "the run's seed= sets it",
    "device": "the run's device= sets it",
    "verbose": "the runner reports progress itself (progress=)",
    "tensorboard_log": "every run writes TensorBoard scalars to <run dir>/tensorboard",
    "_init_setup_model": "the runner builds the model",
    "policy": "agent.policy= sets it (MlpPolicy, CnnPolicy, MultiInputPolicy)",
    "env": "the run's env= sets it",
}
#: Count settings and their least value (SB3 asserts some of these only when the model is built).
COUNTS = {"n_steps": 1, "batch_size": 1, "n_epochs": 1, "buffer_size": 1, "gradient_steps": -1,
          "learning_starts": 0, "target_update_interval": 1}  # fmt: skip


def _import(path: str, what: str) -> Any:
    """``"package.module:Name"`` -> the object; ConfigError with the reason if it cannot be imported."""
    import importlib

    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ConfigError(
            f"{what}={path!r} cannot be imported ({exc}); is its extra installed (pip install -e '.[all]')?"
        ) from exc
    except AttributeError as exc:
        raise ConfigError(f"{what}={path!r}: {module} has no {name}") from exc


def _first_update(algo: str, config: Mapping[str, Any]) -> tuple[int, str]:
    """The smallest budget that gives ``algo`` one update with ``config``'s settings, and what sets it."""
    cls = ALGOS[algo]
    if isinstance(cls, str):  # MaskablePPO: PPO's rollout rule
        cls = PPO
    hp = dict(config.get("hyperparams") or {})
    defaults = {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()}
    n_envs = int(config.get("n_envs", 1) or 1)
    if issubclass(cls, OnPolicyAlgorithm):
        n_steps = int(hp.get("n_steps", defaults.get("n_steps", 1)))
        return n_steps * n_envs, f"its first rollout is agent.hyperparams.n_steps={n_steps} x agent.n_envs={n_envs} steps"
    starts = int(hp.get("learning_starts", defaults.get("learning_starts", 0)))
    return starts + 1, f"it acts at random for agent.hyperparams.learning_starts={starts} steps first"


def _check_hyperparams(algo: str, hyperparams: Mapping[str, Any], algo_cls: type | None = None) -> None:
    """Refuse ``agent.hyperparams`` that ``algo`` would not take, before anything is built.

    Names must be keyword arguments of the SB3 class and not ones the runner sets (``RUN_SET``); settings
    annotated plain ``int`` / ``float`` there must hold numbers (:func:`agents.base.check_number_settings`),
    counts their least value (``COUNTS``); a learning rate or clip range (``SCHEDULED``) a number or
    ``"lin_<number>"`` (:func:`_schedule`).

    Raises:
        ConfigError: An unknown name (the accepted ones are listed) or a value of the wrong kind.
    """
    if algo_cls is None:
        found = ALGOS[algo]
        algo_cls = PPO if isinstance(found, str) else found  # MaskablePPO takes PPO's arguments
    set_by_run = {k: v for k, v in RUN_SET.items() if k in hyperparams}
    if set_by_run:
        raise ConfigError(
            "agent.hyperparams."
            + ", agent.hyperparams.".join(f"{k}: {why}" for k, why in set_by_run.items())
        )
    accepted = set(inspect.signature(algo_cls).parameters) - {"self", "policy", "env", *RUN_SET}
    unknown = sorted(set(hyperparams) - accepted)
    if unknown:
        named = [
            name + "".join(f" (did you mean {m}?)" for m in difflib.get_close_matches(name, accepted, n=1))
            for name in unknown
        ]
        raise ConfigError(f"{algo} does not take {', '.join(named)}; accepted hyperparameters: {', '.join(sorted(accepted))}")
    check_number_settings(algo_cls, hyperparams, "agent.hyperparams")
    for key, least in COUNTS.items():
        value = hyperparams.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value < least:
            raise ConfigError(f"agent.hyperparams.{key}={value} must be >= {least}")
    for key in SCHEDULED:
        _schedule(key, hyperparams.get(key))


def _schedule(name: str, value: Any) -> Any:
    """``"lin_3e-4"`` -> a schedule decaying linearly from 3e-4 to 0; a number, a callable or ``None`` unchanged.

    Raises:
        ConfigError: Anything else (text other than ``lin_<number>``, a bool).
    """
    if value is None or callable(value) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    try:
        if isinstance(value, str) and value.startswith("lin_"):
            return LinearSchedule(float(value[4:]), 0.0, 1.0)
    except ValueError:
        pass
    raise ConfigError(
        f"agent.hyperparams.{name}={value!r} must be a number or lin_<number> (a linear decay to 0, e.g. lin_2.5e-4)"
    )


def _sb3_key(key: str) -> str | None:
    """SB3 logger key -> rewardlab metric name (``train/value_loss`` -> ``loss_value``)."""
    group, _, name = key.partition("/")
    if group != "train":
        return None  # rollout/ and time/ are measured by the runner itself
    if name == "loss":
        return "loss"
    if name.endswith("_loss"):
        return "loss_" + name[: -len("_loss")]
    return "train_" + name


class _ForwardWriter(KVWriter):
    """Sends every SB3 logger dump to the rewardlab callback."""

    def __init__(self, agent: SB3Agent, callback: TrainCallback) -> None:
        self.agent = agent
        self.callback = callback

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        values = {}
        for key, value in key_values.items():
            name = _sb3_key(key)
            if name is not None and isinstance(value, (int, float, np.floating, np.integer)):
                values[name] = float(value)
        if values:
            self.callback.on_log(self.agent.num_steps, values)

    def close(self) -> None:
        pass


class _Budget(BaseCallback):
    """Forwards SB3 steps to the rewardlab callback and stops SB3 exactly at the step budget.

    SB3 checks its budget only between rollouts, so PPO would finish a whole rollout past it.
    Here we stop mid-rollout at the budget, except on the last step of a rollout (on-policy) or
    of a ``train_freq`` window (off-policy), where SB3 trains once more and then stops by itself.
    """

    def __init__(self, budget: int, callback: TrainCallback, log_every: int, start: int) -> None:
        super().__init__()
        self.budget = budget
        self.callback = callback
        self.log_every = log_every
        self.next_log = start + log_every

    def _rollout_ends_here(self) -> bool:
        model = self.model
        if isinstance(model, OnPolicyAlgorithm):
            return self.locals.get("n_steps", -2) + 1 == self.locals.get("n_rollout_steps", -1)
        train_freq = getattr(model, "train_freq", None)
        if train_freq is not None and train_freq.unit.value == "step":
            return self.locals.get("num_collected_steps", 0) >= train_freq.frequency
        return False

    def _on_step(self) -> bool:
        if self.num_timesteps >= self.next_log:
            # SB3 dumps its logs per rollout or per N episodes; we dump per N steps instead.
            self.logger.dump(self.num_timesteps)
            while self.next_log <= self.num_timesteps:
                self.next_log += self.log_every
        if not self.callback.on_step(self.num_timesteps):
            return False
        if self.num_timesteps >= self.budget:
            return self._rollout_ends_here()
        return True


class SB3Agent(Agent):
    """A stable-baselines3 algorithm as a rewardlab agent.

    Args:
        algo: ``PPO``, ``A2C``, ``DQN``, ``SAC`` or ``TD3``.
        env: The training vector env (rewards already swapped by the reward wrapper).
        reward: The run's reward provider (the proxy the env returns); a learned one that scores
            frames is refused for off-policy algorithms (their buffers keep no frames to relabel).
        seed: Seed for SB3 (network init, exploration).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        policy: SB3 policy name (``MlpPolicy``, ``CnnPolicy``) or class (``package.module:Class``).
        hyperparams: Keyword arguments of the SB3 algorithm class (``replay_buffer_class`` also as ``package.module:Class``).
        policy_kwargs: SB3 ``policy_kwargs``; ``activation_fn`` given by name.
        normalize_obs: Wrap the env in ``VecNormalize`` for observations.
        normalize_reward: ``VecNormalize`` for (proxy) rewards.
        action_noise: ``{type: normal|ornstein_uhlenbeck, std: float}`` for TD3/SAC exploration.
        save_replay_buffer: Include the replay buffer in checkpoints (exact resume).
        log_every: Env steps between reports of SB3's training statistics (losses).
        card: The env's card: an algorithm that masks actions while training (MaskablePPO) masks
            them with the card's ``action_mask`` wherever it acts (evaluation, videos, collection);
            without one it acts unmasked (fine for a policy that masks itself, as the jobshop per-job
            policy does from its observation).
    """

    def __init__(
        self,
        algo: str,
        env: VecEnv,
        reward: RewardProvider | None = None,
        seed: int = 0,
        device: str = "auto",
        policy: str = "MlpPolicy",
        hyperparams: Mapping[str, Any] | None = None,
        policy_kwargs: Mapping[str, Any] | None = None,
        normalize_obs: bool = False,
        normalize_reward: bool = False,
        action_noise: Mapping[str, Any] | None = None,
        save_replay_buffer: bool = True,
        log_every: int = 1000,
        card: EnvCard | None = None,
    ) -> None:
        needs = self.requirements({"algo": algo})
        if not isinstance(env.action_space, needs.action_spaces):
            kinds = " or ".join(s.__name__ for s in needs.action_spaces)
            raise ConfigError(f"{algo} needs a {kinds} action space, but this env has {env.action_space}; {needs.hint}")
        if "action_masks" in needs.features and not env.has_attr("action_masks"):
            raise ConfigError(f"{algo} needs an env with action_masks() (e.g. env=jobshop); {needs.hint}")
        self.algo = algo
        # masks while acting as while training; without the card's mask the policy must mask itself
        self.mask_fn = card.action_mask if card is not None and "action_masks" in needs.features else None
        algo_cls = ALGOS[algo]
        self.algo_cls: type[BaseAlgorithm] = _import(algo_cls, "agent.algo") if isinstance(algo_cls, str) else algo_cls
        if ":" in policy:
            policy = _import(policy, "agent.policy")
        self.device = device
        self.raw_env = env
        self.save_replay_buffer = save_replay_buffer
        self.log_every = max(1, int(log_every))
        kwargs = self._sb3_kwargs(hyperparams or {}, policy_kwargs or {}, action_noise, env)
        if kwargs.get("optimize_memory_usage") and "replay_buffer_class" not in kwargs and not isinstance(
            env.observation_space, gym.spaces.Dict
        ):  # SB3's own loses s' at episode ends (relabelling, truncation, medium-replay need it)
            kwargs["replay_buffer_class"] = CompactReplayBuffer
        self.vecnorm: VecNormalize | None = None
        train_env: VecEnv = env
        if normalize_obs or normalize_reward:
            gamma = float(kwargs.get("gamma", 0.99))
            self.vecnorm = VecNormalize(env, norm_obs=normalize_obs, norm_reward=normalize_reward, gamma=gamma)
            train_env = self.vecnorm
        self.model: BaseAlgorithm = self.algo_cls(policy, train_env, seed=seed, device=device, verbose=0, **kwargs)
        if isinstance(self.model, OffPolicyAlgorithm) and isinstance(reward, LearnedReward) and reward.needs:
            raise ConfigError(
                f"{algo} keeps a replay buffer of observations, and {type(reward).__name__} learns a reward "
                "on frames while training: the buffer's rewards could not be recomputed after each update. "
                "Use an on-policy agent (agent=ppo or a2c) or a reward model on observations (reward/model=mlp)"
            )
        buffer = getattr(self.model, "replay_buffer", None)
        if (
            isinstance(reward, LearnedReward)
            and isinstance(buffer, ReplayBuffer)
            and buffer.optimize_memory_usage
            and not isinstance(buffer, CompactReplayBuffer)
        ):
            raise ConfigError(
                f"{algo}'s {type(buffer).__name__} with optimize_memory_usage keeps no next observation at "
                f"episode ends, so {type(reward).__name__}'s rewards could not be recomputed; leave "
                "agent.hyperparams.replay_buffer_class unset (rewardlab's CompactReplayBuffer keeps them)"
            )

    @classmethod
    def requirements(cls, config: Mapping[str, Any]) -> Requirements:
        """Action spaces and env features of the configured ``algo`` (``ACTION_SPACES``, ``FEATURES``)."""
        algo = str(config.get("algo"))
        if algo not in ALGOS:
            raise ConfigError(f"agent.algo={algo!r} is not one of {', '.join(ALGOS)}")
        _check_hyperparams(algo, dict(config.get("hyperparams") or {}))
        first, why = _first_update(algo, config)
        return Requirements(
            action_spaces=ACTION_SPACES[algo],
            features=FEATURES.get(algo, frozenset()),
            hint="use ppo or a2c (Box, Discrete, MultiDiscrete, MultiBinary), dqn (Discrete), sac or td3 (Box); "
            "on a text env (env=text-*) alol, nll, wbc, dpo or pro",
            label=algo,
            first_update=first,
            first_update_why=why,
        )

    def _sb3_kwargs(
        self,
        hyperparams: Mapping[str, Any],
        policy_kwargs: Mapping[str, Any],
        action_noise: Mapping[str, Any] | None,
        env: VecEnv,
    ) -> dict[str, Any]:
        _check_hyperparams(self.algo, hyperparams, self.algo_cls)
        kwargs = {k: _schedule(k, v) if k in SCHEDULED else v for k, v in hyperparams.items()}
        buffer_class = kwargs.get("replay_buffer_class")
        if isinstance(buffer_class, str):  # from a config: "package.module:Class"
            kwargs["replay_buffer_class"] = _import(buffer_class, "agent.hyperparams.replay_buffer_class")
        pk = dict(policy_kwargs)
        if "activation_fn" in pk:
            name = str(pk["activation_fn"]).lower()
            if name not in ACTIVATIONS:
                raise ConfigError(f"policy_kwargs.activation_fn={name!r} is not one of {', '.join(ACTIVATIONS)}")
            pk["activation_fn"] = ACTIVATIONS[name]
        if pk:
            kwargs["policy_kwargs"] = pk
        if action_noise:
            kind = action_noise.get("type", "normal")
            if kind not in NOISES:
                raise ConfigError(f"action_noise.type={kind!r} is not one of {', '.join(NOISES)}")
            shape = env.action_space.shape
            if shape is None:
                raise ConfigError(f"action_noise needs an action space with a shape, not {env.action_space}")
            dim = int(np.prod(shape))
            std = float(action_noise.get("std", 0.1))
            kwargs["action_noise"] = NOISES[kind](mean=np.zeros(dim), sigma=std * np.ones(dim))
        return kwargs

    @property
    @override
    def num_steps(self) -> int:
        return int(self.model.num_timesteps)

    @override
    def train(self, steps: int, callback: TrainCallback) -> None:
        remaining = int(steps) - self.num_steps
        if remaining <= 0:
            return
        logger = Logger(folder=None, output_formats=[_ForwardWriter(self, callback)])
        self.model.set_logger(logger)
        self.model.learn(
            total_timesteps=remaining,
            callback=_Budget(int(steps), callback, self.log_every, self.num_steps),
            log_interval=None,  # type: ignore[arg-type]  # dumps are done by _Budget
            reset_num_timesteps=False,
            progress_bar=False,
        )
        logger.dump(self.num_steps)  # statistics of the last update

    @override
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        model_obs: np.ndarray | dict[str, np.ndarray] = obs
        if self.vecnorm is not None:
            model_obs = self.vecnorm.normalize_obs(obs)
        if self.mask_fn is not None:  # as in training, where the env's masks are passed
            masked, _ = self.model.predict(  # type: ignore[call-arg]  # MaskablePPO's predict takes masks
                model_obs, deterministic=deterministic, action_masks=self.mask_fn(np.asarray(obs))
            )
            return masked
        actions, _ = self.model.predict(model_obs, deterministic=deterministic)
        return actions

    # --- checkpoints ---------------------------------------------------------------------

    @override
    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save(path / "model.zip")
        if self.vecnorm is not None:
            self.vecnorm.save(str(path / "vecnormalize.pkl"))
        buffer = getattr(self.model, "replay_buffer", None)
        if self.save_replay_buffer and isinstance(buffer, ReplayBuffer):
            _save_buffer(buffer, path / "replay_buffer.npz")

    @override
    def load(self, path: Path) -> None:
        path = Path(path)
        env: VecEnv = self.raw_env
        if self.vecnorm is not None:
            self.vecnorm = _load_vecnormalize(path / "vecnormalize.pkl", self.raw_env)
            env = self.vecnorm
        # The env's spaces, not the saved ones: a size-agnostic policy (e.g. the jobshop job
        # scorer) trained with 15 observation rows then runs on an env with 100.
        spaces = {"observation_space": env.observation_space, "action_space": env.action_space}
        try:
            self.model = self.algo_cls.load(path / "model.zip", env=env, device=self.device, custom_objects=spaces)
        except RuntimeError as exc:  # state dict shapes differ
            raise ConfigError(
                f"checkpoint {path} does not fit this env (observation {env.observation_space}, action {env.action_space}): "
                f"{str(exc).splitlines()[0]}"
            ) from exc
        buffer_file = path / "replay_buffer.npz"
        if isinstance(self.model, OffPolicyAlgorithm) and self.model.replay_buffer is not None and buffer_file.exists():
            _load_buffer(self.model.replay_buffer, buffer_file)

    def relabel(self, reward: RewardProvider, chunk: int = 65536) -> None:
        """Recompute the proxy rewards stored in an off-policy agent's replay buffer with ``reward``.

        Called after a learned reward changed; on-policy agents keep nothing to relabel. Each stored
        transition is scored as the env made it: ``s'`` is the real next observation (in a
        memory-optimised buffer the next row's, and the kept last observation at an episode's end:
        :class:`CompactReplayBuffer`), Box actions are the env's (SB3 stores them scaled to [-1, 1]),
        and ``terminated`` / ``truncated`` are the stored episode ends. The true reward is not stored
        (``env_reward`` is NaN): learned rewards do not read it.

        Args:
            reward: The provider whose rewards replace the stored ones.
            chunk: Transitions scored per call of ``reward.reward`` (bounds memory).
        """
        buffer = getattr(self.model, "replay_buffer", None)
        if not isinstance(buffer, ReplayBuffer):
            return
        size = buffer.buffer_size if buffer.full else buffer.pos
        n_envs = buffer.n_envs
        box = isinstance(self.raw_env.action_space, gym.spaces.Box)
        step = max(1, int(chunk) // n_envs)
        for s in range(0, size, step):
            rows = np.arange(s, min(s + step, size))
            flat_rows, flat_envs = np.repeat(rows, n_envs), np.tile(np.arange(n_envs), len(rows))  # row-major
            next_obs, truncated = stored_next(buffer, flat_rows, flat_envs)
            actions = buffer.actions[rows].reshape(len(flat_rows), -1)
            if box:  # SB3 stores Box actions scaled to [-1, 1]
                actions = self.model.policy.unscale_action(actions)
            done = buffer.dones[rows].reshape(-1) > 0
            n = len(flat_rows)
            batch = TransitionBatch(
                obs=buffer.observations[rows].reshape(n, *buffer.obs_shape),
                action=actions if box else actions[:, 0],
                next_obs=next_obs.reshape(n, *buffer.obs_shape),
                env_reward=np.full(n, np.nan, dtype=np.float32),  # not stored by SB3; learned rewards do not read it
                terminated=done & ~truncated,
                truncated=truncated,
            )
            out = check_rewards(reward.reward(batch), n, source=type(reward).__name__)
            buffer.rewards[rows] = out.reshape(len(rows), n_envs)

    @override
    def close(self) -> None:
        env = self.model.get_env()
        if env is not None:
            env.close()


def _load_vecnormalize(file: Path, venv: VecEnv) -> VecNormalize:
    """``VecNormalize.load`` that also accepts an env of another observation shape.

    The shape may differ when observations are not normalised (only the reward statistics matter then).
    """
    import pickle

    with file.open("rb") as f:
        vecnorm: VecNormalize = pickle.load(f)
    if not vecnorm.norm_obs:  # the pickle holds the training env's spaces; set_venv checks them
        vecnorm.observation_space, vecnorm.action_space = venv.observation_space, venv.action_space
    vecnorm.set_venv(venv)
    return vecnorm


class CompactReplayBuffer(ReplayBuffer):
    """SB3's memory-optimised replay buffer, plus the real last observation of each episode.

    With ``optimize_memory_usage`` SB3 keeps one observation array: the ``s'`` of row ``i`` is the
    ``s`` of row ``i + 1`` (modulo the capacity, so the newest row's ``s'`` sits in the oldest row,
    which is then invalid and never sampled). At an episode's end SB3 writes the real terminal
    observation into row ``i + 1``, and the next ``add`` overwrites it with the first observation of
    the next episode: the ``s'`` of every episode-ending transition is lost, and SB3 reads the next
    episode's first state there. It therefore refuses ``handle_timeout_termination`` in this mode
    (a truncated episode would bootstrap from that state; DLR-RM/stable-baselines3#934).

    This buffer keeps, for each (row, env) that ends an episode, the real ``s'`` and whether the
    episode was cut by a time limit, in a table beside the arrays (one observation per episode,
    dropped when the row is overwritten), and reads ``s'`` through it everywhere: sampling (so
    ``handle_timeout_termination`` works, and is on by default as in SB3's other mode), relabelling
    (:meth:`SB3Agent.relabel`), checkpoints and ``collect.py recipe=medium-replay``. The SB3 agent
    uses it whenever ``optimize_memory_usage`` is set; without that setting it is SB3's buffer.
    Takes SB3's ``ReplayBuffer`` arguments.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
    ) -> None:
        # SB3 refuses both flags together; with the kept last observations they are sound
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination and not optimize_memory_usage,
        )
        self.handle_timeout_termination = handle_timeout_termination
        #: ``(row, env) -> (s' of shape obs_shape, truncated)`` for the rows that end an episode
        self.episode_ends: dict[tuple[int, int], tuple[np.ndarray, bool]] = {}

    @override
    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        if self.optimize_memory_usage:
            row = self.pos
            for j in range(self.n_envs):  # the row is overwritten: what it ended is gone
                self.episode_ends.pop((row, j), None)
            last = np.asarray(next_obs).reshape(self.n_envs, *self.obs_shape)
            for j in np.flatnonzero(done).tolist():
                cut = bool(infos[j].get("TimeLimit.truncated", False))
                self.episode_ends[(row, j)] = (np.array(last[j], dtype=self.observations.dtype), cut)
        super().add(obs, next_obs, action, reward, done, infos)

    def next_observations_at(self, rows: np.ndarray, envs: np.ndarray) -> np.ndarray:
        """``(k, *obs_shape)`` real ``s'`` of the transitions ``(rows[k], envs[k])`` (a copy)."""
        if not self.optimize_memory_usage:
            return self.next_observations[rows, envs]
        out = self.observations[(rows + 1) % self.buffer_size, envs]
        for k in np.flatnonzero(self.dones[rows, envs]):  # episode ends: the kept last observation
            kept = self.episode_ends.get((int(rows[k]), int(envs[k])))
            if kept is not None:
                out[k] = kept[0]
        return out

    def truncated_at(self, rows: np.ndarray, envs: np.ndarray) -> np.ndarray:
        """``(k,)`` bool: the transition ``(rows[k], envs[k])`` ended its episode at a time limit."""
        cut = (self.dones[rows, envs] > 0) & (self.timeouts[rows, envs] > 0)
        if self.optimize_memory_usage:
            for k in np.flatnonzero(self.dones[rows, envs]):
                kept = self.episode_ends.get((int(rows[k]), int(envs[k])))
                cut[k] |= kept is not None and kept[1]
        return cut

    @override
    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> ReplayBufferSamples:
        if not self.optimize_memory_usage:
            return super()._get_samples(batch_inds, env)
        env_indices = np.random.randint(0, high=self.n_envs, size=(len(batch_inds),))  # as SB3 samples them
        data = (
            self._normalize_obs(self.observations[batch_inds, env_indices, :], env),
            self.actions[batch_inds, env_indices, :],
            self._normalize_obs(self.next_observations_at(batch_inds, env_indices), env),
            (self.dones[batch_inds, env_indices] * (1 - self.timeouts[batch_inds, env_indices])).reshape(-1, 1),
            self._normalize_reward(self.rewards[batch_inds, env_indices].reshape(-1, 1), env),
        )
        return ReplayBufferSamples(*tuple(map(self.to_torch, data)))

    def ends_arrays(self) -> dict[str, np.ndarray]:
        """The kept episode ends as arrays, for checkpoints.

        Returns:
            ``ends_rows``, ``ends_envs``: ``(k,)`` int64; ``ends_obs``: ``(k, *obs_shape)``;
            ``ends_truncated``: ``(k,)`` bool.
        """
        keys = sorted(self.episode_ends)
        return {
            "ends_rows": np.array([r for r, _ in keys], dtype=np.int64),
            "ends_envs": np.array([e for _, e in keys], dtype=np.int64),
            "ends_obs": (
                np.stack([self.episode_ends[k][0] for k in keys])
                if keys
                else np.zeros((0, *self.obs_shape), dtype=self.observations.dtype)
            ),
            "ends_truncated": np.array([self.episode_ends[k][1] for k in keys], dtype=bool),
        }

    def load_ends(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Restore what :meth:`ends_arrays` returned."""
        self.episode_ends = {
            (int(r), int(e)): (np.array(o), bool(t))
            for r, e, o, t in zip(
                arrays["ends_rows"], arrays["ends_envs"], arrays["ends_obs"], arrays["ends_truncated"], strict=True
            )
        }


def stored_next(buffer: ReplayBuffer, rows: np.ndarray, envs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The real ``s'`` ``(k, *obs_shape)`` and ``truncated`` ``(k,)`` of the transitions ``(rows[k], envs[k])``.

    Raises:
        ConfigError: A memory-optimised buffer that is not a :class:`CompactReplayBuffer` (its
            episode ends' ``s'`` are lost).
    """
    if isinstance(buffer, CompactReplayBuffer):
        return buffer.next_observations_at(rows, envs), buffer.truncated_at(rows, envs)
    if buffer.optimize_memory_usage:
        raise ConfigError(
            f"{type(buffer).__name__} with optimize_memory_usage keeps no next observation at episode ends; "
            "leave agent.hyperparams.replay_buffer_class unset (rewardlab's CompactReplayBuffer keeps them)"
        )
    done = buffer.dones[rows, envs] > 0
    return buffer.next_observations[rows, envs], done & (buffer.timeouts[rows, envs] > 0)


_BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def _save_buffer(buffer: ReplayBuffer, file: Path) -> None:
    """Save only the filled part of an SB3 replay buffer (SB3 pickles all ``buffer_size`` rows)."""
    size = buffer.buffer_size if buffer.full else buffer.pos
    arrays = {name: getattr(buffer, name)[:size] for name in _BUFFER_ARRAYS if getattr(buffer, name, None) is not None}
    if buffer.optimize_memory_usage:  # s' of the newest row is the next row's s
        arrays["observations"] = buffer.observations[: min(size + 1, buffer.buffer_size)]
    if isinstance(buffer, CompactReplayBuffer) and buffer.optimize_memory_usage:
        arrays.update(buffer.ends_arrays())
    meta = {"pos": int(buffer.pos), "full": bool(buffer.full), "buffer_size": int(buffer.buffer_size)}
    tmp = file.with_suffix(".tmp.npz")
    np.savez(tmp, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
    tmp.replace(file)


def _load_buffer(buffer: ReplayBuffer, file: Path) -> None:
    with np.load(file) as data:
        meta = json.loads(data["meta"].tobytes().decode())
        if meta["buffer_size"] != buffer.buffer_size:
            raise ConfigError(
                f"replay buffer in {file} has {meta['buffer_size']} rows per env, the agent {buffer.buffer_size}; "
                "resume with the run's own config"
            )
        for name in _BUFFER_ARRAYS:
            if name in data.files:
                rows = data[name]
                getattr(buffer, name)[: len(rows)] = rows
        if isinstance(buffer, CompactReplayBuffer) and "ends_rows" in data.files:
            buffer.load_ends(data)
        buffer.pos, buffer.full = meta["pos"], meta["full"]
