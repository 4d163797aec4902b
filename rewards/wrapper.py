"""The one reward wrapper: swaps the provider's proxy reward in, keeps the true reward in ``info``.

It sits on a stable-baselines3 ``VecEnv`` so that a provider scores all envs' transitions (and
frames) in one batch. Per step it

* builds a :class:`~rewards.base.TransitionBatch` with the real terminal observation at episode
  ends (SB3 vector envs auto-reset and keep it in ``info["terminal_observation"]``),
* returns the proxy reward to the agent and puts the env's own reward in ``info["true_reward"]``,
* keeps ``terminated`` and ``truncated`` apart (``info["TimeLimit.truncated"]``),
* counts true and proxy return per episode (and the provider's named reward components, summed
  per episode, when it reports them in ``last_components``); finished episodes are collected as
  :class:`EpisodeStats` (:meth:`RewardVecEnv.pop_episodes`) and also exposed as SB3's
  ``info["episode"]`` (proxy return: what the agent is trained on). Envs may add figures
  (``info["episode_metrics"]``, averaged into ``summary.json``) and files
  (``info["episode_artifacts"]``: relative path -> JSON object, written by the runner for the
  final evaluation) on the last step of an episode.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn
from typing_extensions import override

from envs import extras
from rewards.base import LearnedReward, RewardProvider, TransitionBatch, check_rewards


@dataclass
class EpisodeStats:
    """One finished episode: returns under both rewards, length, success, env-specific figures."""

    true_return: float
    proxy_return: float
    length: int
    env_index: int
    success: bool | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, object] = field(default_factory=dict)
    components: dict[str, float] = field(default_factory=dict)


class RewardVecEnv(VecEnvWrapper):
    """Vector-env wrapper returning ``provider.reward(batch)`` as the reward (module docstring).

    Args:
        venv: The vector env (its reward is the true reward).
        provider: The reward provider producing the proxy reward.
        observe: Show a :class:`~rewards.base.LearnedReward` every batch (its ``observe``): the training
            env's wrapper does. The envs must put the provider's ``needs`` in ``info``
            (:func:`envs.make.make_vec_env` with ``extras=provider.needs``).
    """

    def __init__(self, venv: VecEnv, provider: RewardProvider, observe: bool = False) -> None:
        super().__init__(venv)
        provider.bind(venv.observation_space, venv.action_space)
        self.provider = provider
        # only providers that learn from the data pay for it (the components are gathered every step)
        self.learner: LearnedReward | None = provider if observe and isinstance(provider, LearnedReward) else None
        self.needs = extras.check_needs(provider.needs, type(provider).__name__)
        self._source = type(provider).__name__
        self._obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None
        self._true_return = np.zeros(self.num_envs, dtype=np.float64)
        self._proxy_return = np.zeros(self.num_envs, dtype=np.float64)
        self._length = np.zeros(self.num_envs, dtype=np.int64)
        self._t0 = time.time()
        self._finished: list[EpisodeStats] = []
        self._components: dict[str, np.ndarray] = {}

    @override
    def reset(self) -> np.ndarray:
        obs = self.venv.reset()
        if not isinstance(obs, np.ndarray):
            raise TypeError(f"RewardVecEnv needs array observations, got {type(obs).__name__}")
        self._obs = obs
        self._true_return[:] = 0.0
        self._proxy_return[:] = 0.0
        self._length[:] = 0
        self._components = {}
        return obs

    @override
    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)
        self.venv.step_async(actions)

    @override
    def step_wait(self) -> VecEnvStepReturn:
        obs, env_reward, dones, infos = self.venv.step_wait()
        if not isinstance(obs, np.ndarray):
            raise TypeError(f"RewardVecEnv needs array observations, got {type(obs).__name__}")
        if self._obs is None or self._actions is None:
            raise RuntimeError("RewardVecEnv.step_wait before reset() and step_async()")
        done_idx = np.flatnonzero(dones)
        next_obs = obs
        if done_idx.size:
            next_obs = obs.copy()
            for i in done_idx:
                next_obs[i] = infos[i]["terminal_observation"]
        truncated = np.fromiter((info.get("TimeLimit.truncated", False) for info in infos), bool, self.num_envs)
        batch_extras = extras.gather(infos, self.needs) if self.needs else {}
        true_reward = np.asarray(env_reward, dtype=np.float32)
        batch = TransitionBatch(
            obs=self._obs,
            action=self._actions,
            next_obs=next_obs,
            env_reward=true_reward,
            terminated=np.asarray(dones, dtype=bool) & ~truncated,
            truncated=truncated,
            extras=batch_extras,
        )
        proxy = check_rewards(self.provider.reward(batch), self.num_envs, source=self._source)
        if self.learner is not None:
            self.learner.observe(batch, env_components(infos))

        self._true_return += true_reward
        self._proxy_return += proxy
        for name, values in self.provider.last_components.items():
            if name not in self._components:
                self._components[name] = np.zeros(self.num_envs, dtype=np.float64)
            self._components[name] += values
        self._length += 1
        for k, info in enumerate(infos):
            info["true_reward"] = float(true_reward[k])
        for i in done_idx:
            info = infos[i]
            stats = EpisodeStats(
                true_return=float(self._true_return[i]),
                proxy_return=float(self._proxy_return[i]),
                length=int(self._length[i]),
                env_index=int(i),
                success=info.get("success"),
                metrics=dict(info.get("episode_metrics", {})),
                artifacts=dict(info.get("episode_artifacts", {})),
                components={name: float(sums[i]) for name, sums in self._components.items()},
            )
            self._finished.append(stats)
            info["episode"] = {"r": stats.proxy_return, "l": stats.length, "t": round(time.time() - self._t0, 6)}
            self._true_return[i] = self._proxy_return[i] = 0.0
            self._length[i] = 0
            for sums in self._components.values():
                sums[i] = 0.0
        self._obs = obs
        return obs, proxy, dones, infos

    def pop_episodes(self) -> list[EpisodeStats]:
        """Episodes finished since the last call (and forget them)."""
        out, self._finished = self._finished, []
        return out

    @override
    def close(self) -> None:
        self.provider.close()
        super().close()


def env_components(infos: list[dict]) -> dict[str, np.ndarray]:
    """The env's reward terms that every env reports in ``info`` (Gymnasium MuJoCo's ``reward_*``).

    Args:
        infos: One ``info`` dict per env of a vector step.

    Returns:
        ``{name: (len(infos),) float32}`` for each scalar ``reward_<name>`` key present in every info.
    """
    keys = [k for k, v in infos[0].items() if k.startswith("reward_") and np.isscalar(v)]
    return {
        k[len("reward_") :]: np.array([info[k] for info in infos], dtype=np.float32)
        for k in keys
        if all(k in i for i in infos)
    }
