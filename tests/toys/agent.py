"""A toy agent: a linear policy improved by random search on episode returns (basic random search,
Mania et al. 2018, without its normalisations), for discrete or bounded Box actions.

It exists to show (and test) that an agent from outside the packages plugs into the runner through
its constructor's declared arguments and the five members of :class:`agents.base.Agent`.
"""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np

from agents.base import Agent, TrainCallback


class RandomSearch(Agent):
    """Hill climbing on a linear policy: try ``W + noise``, keep it when its training episode scores higher.

    Args:
        env: The training vector env (proxy reward swapped in); one episode per env and trial.
        seed: Seeds the perturbations.
        noise: Standard deviation of each perturbation of the ``(obs_dim, n_out)`` weights.
    """

    def __init__(self, env: object, seed: int = 0, noise: float = 0.1) -> None:
        self.env = env
        space = env.action_space  # type: ignore[attr-defined]
        self.discrete = isinstance(space, gym.spaces.Discrete)
        n_out = int(space.n) if self.discrete else int(np.prod(space.shape))
        obs_dim = int(np.prod(env.observation_space.shape))  # type: ignore[attr-defined]
        self.space, self.noise = space, float(noise)
        self.rng = np.random.default_rng(int(seed))
        self.weights = np.zeros((obs_dim, n_out))
        self.best = -np.inf
        self.steps = 0

    @property
    def num_steps(self) -> int:
        return self.steps

    def _act(self, weights: np.ndarray, obs: np.ndarray) -> np.ndarray:
        scores = np.asarray(obs, dtype=np.float64).reshape(len(obs), -1) @ weights
        if self.discrete:
            return scores.argmax(1)
        low, high = self.space.low, self.space.high  # type: ignore[attr-defined]
        return (low + (np.tanh(scores) + 1.0) / 2.0 * (high - low)).astype(np.float32)

    def train(self, steps: int, callback: TrainCallback) -> None:
        env = self.env
        while self.steps < steps:
            trial = self.weights + self.noise * self.rng.standard_normal(self.weights.shape)
            obs, total, done = env.reset(), 0.0, False  # type: ignore[attr-defined]
            while not done and self.steps < steps:
                obs, reward, dones, _ = env.step(self._act(trial, obs))  # type: ignore[attr-defined]
                total += float(reward[0])
                done = bool(dones[0])
                self.steps += env.num_envs  # type: ignore[attr-defined]
                if not callback.on_step(self.steps):
                    return
            if done and total > self.best:
                self.best, self.weights = total, trial
                callback.on_log(self.steps, {"train_best_return": self.best})

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return self._act(self.weights, obs)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {"weights": self.weights.tolist(), "best": self.best, "steps": self.steps,
                 "rng": self.rng.bit_generator.state}  # fmt: skip
        (path / "random_search.json").write_text(json.dumps(state))

    def load(self, path: Path) -> None:
        state = json.loads((Path(path) / "random_search.json").read_text())
        self.weights, self.best, self.steps = np.asarray(state["weights"]), float(state["best"]), int(state["steps"])
        self.rng.bit_generator.state = state["rng"]
