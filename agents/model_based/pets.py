"""PETS: probabilistic ensembles with trajectory sampling (Chua, Calandra, McAllister & Levine, 2018).

An online model-based agent with no policy network. It acts at random for ``learning_starts`` env
steps, then every step plans with model-predictive control:

1. fit the ensemble ``p_theta(s' | s, a)`` (:mod:`agents.model_based.dynamics`) on *all* real transitions
   collected so far, at the first planning step and every ``train_every`` env steps after;
2. at state ``s``, choose ``a_{0:H}`` maximising the expected return under the model, estimated by
   ``particles`` trajectories that each follow one elite member (TS-inf), with CEM or iCEM
   (:mod:`agents.model_based.planning`); execute ``a_0``, keep the plan shifted by one step as the next
   state's warm start (reset at the episode's end).

The reward planned on is the run's *proxy* (the reward provider; the true one with ``reward=env``),
evaluated on imagined transitions; the termination is the env card's. Defaults are mbrl-lib's
(``pets_*.yaml``: ensemble 7 / 5 elites / 4x200 SiLU, CEM with 5 iterations, 10% elites, alpha 0.1,
20 particles, horizon 15-30) scaled to a CPU (population and particles; ``experiments/conf/agent/pets.yaml``).

``act`` (evaluation, videos) plans with the same model and optimiser from its own warm start and a
random stream reseeded from the agent's seed and step whenever training stops or a checkpoint is
loaded, so an agent and its reloaded copy act alike. Checkpoints hold the ensemble (weights,
optimiser, normaliser, elites), the real transitions, the training planner's warm start, the random
streams and the step counters: a resumed run plans exactly as the uninterrupted one would from the
same observation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from typing_extensions import override

from agents.base import Agent, Requirements, TrainCallback
from agents.model_based.dynamics import EnsembleDynamics, check_model_settings
from agents.model_based.planning import (
    CEM,
    ICEM,
    MPC,
    Objective,
    evaluate_action_sequences,
    model_functions,
)
from envs.cards import EnvCard
from envs.errors import ConfigError
from rewards.base import RewardProvider

PLANNERS = ("cem", "icem")


class Transitions:
    """Real transitions ``(s, a, s')`` in arrays that grow by doubling."""

    def __init__(self, obs_dim: int, action_dim: int) -> None:
        self.obs = np.zeros((0, obs_dim), np.float32)
        self.action = np.zeros((0, action_dim), np.float32)
        self.next_obs = np.zeros((0, obs_dim), np.float32)
        self.size = 0

    def add(self, obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> None:
        """Append ``(n, obs_dim)``, ``(n, action_dim)``, ``(n, obs_dim)``."""
        n = len(obs)
        if self.size + n > len(self.obs):
            cap = max(2 * len(self.obs), self.size + n, 1024)
            for name in ("obs", "action", "next_obs"):
                old = getattr(self, name)
                new = np.zeros((cap, old.shape[1]), np.float32)
                new[: self.size] = old[: self.size]
                setattr(self, name, new)
        self.obs[self.size : self.size + n] = obs
        self.action[self.size : self.size + n] = action
        self.next_obs[self.size : self.size + n] = next_obs
        self.size += n

    def arrays(self) -> dict[str, np.ndarray]:
        """The filled rows."""
        return {k: getattr(self, k)[: self.size] for k in ("obs", "action", "next_obs")}


class PETS(Agent):
    """``agent=pets`` (module docstring).

    Args:
        env: The training vector env (proxy reward swapped in); Box actions.
        reward: The run's reward provider, planned on.
        card: The env's card: its termination function (bound to the env's kwargs).
        seed: Seeds weights, exploration and planning.
        device: ``cpu`` or ``cuda``.
        planner: ``cem`` or ``icem``.
        horizon: Planning horizon ``H`` (env steps).
        population: Sequences per optimiser iteration (iCEM: the first iteration's).
        iterations: Optimiser iterations per action.
        elites: Best sequences that refit the sampling distribution.
        particles: Model trajectories per sequence.
        alpha: Weight of the previous mean / variance in each refit.
        noise_beta: iCEM's coloured-noise exponent.
        population_decay: iCEM's population shrink factor per iteration.
        keep_elites: iCEM's fraction of elites carried over.
        ensemble_size: Members of the dynamics ensemble.
        model_elites: Members used to predict (best validation MSE).
        hidden: Hidden layer widths of each member.
        learning_rate: Adam step size of the model.
        weight_decay: Adam weight decay of the model.
        batch_size: Model minibatch size.
        epochs: Most epochs per model fit.
        patience: Epochs without validation improvement before a fit stops.
        val_ratio: Fraction of the data held out to stop fits and pick elites.
        learning_starts: Uniform-random env steps before the first fit.
        train_every: Env steps between model fits.
        deterministic_model: Propagate member means instead of samples.

    Raises:
        ConfigError: A bad setting, a reward the model cannot compute, or an env with no termination function.
    """

    def __init__(
        self,
        env: Any,
        reward: RewardProvider,
        card: EnvCard | None = None,
        seed: int = 0,
        device: str = "cpu",
        planner: str = "cem",
        horizon: int = 15,
        population: int = 200,
        iterations: int = 5,
        elites: int = 20,
        particles: int = 10,
        alpha: float = 0.1,
        noise_beta: float = 2.0,
        population_decay: float = 1.25,
        keep_elites: float = 0.3,
        ensemble_size: int = 7,
        model_elites: int = 5,
        hidden: Sequence[int] = (200, 200, 200, 200),
        learning_rate: float = 1e-3,
        weight_decay: float = 5e-5,
        batch_size: int = 32,
        epochs: int = 50,
        patience: int = 10,
        val_ratio: float = 0.2,
        learning_starts: int = 200,
        train_every: int = 200,
        deterministic_model: bool = False,
    ) -> None:
        space = env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise ConfigError(f"agent=pets needs a Box action space, but this env has {space}; {HINT}")
        if planner not in PLANNERS:
            raise ConfigError(f"agent.planner={planner!r} is not one of {', '.join(PLANNERS)}")
        for name, value in (("particles", particles), ("ensemble_size", ensemble_size), ("model_elites", model_elites),
                            ("train_every", train_every), ("batch_size", batch_size), ("epochs", epochs)):  # fmt: skip
            if int(value) <= 0:
                raise ConfigError(f"agent.{name}={value} must be a positive integer")
        check_model_settings(ensemble_size, model_elites, learning_starts, val_ratio)
        self.device = torch.device(device if device != "auto" else "cpu")
        self.env, self.seed = env, int(seed)
        self.obs_dim = int(np.prod(env.observation_space.shape))
        self.action_dim = int(np.prod(space.shape))
        low = torch.as_tensor(space.low.reshape(-1), dtype=torch.float32, device=self.device)
        high = torch.as_tensor(space.high.reshape(-1), dtype=torch.float32, device=self.device)
        kwargs = dict(planner=planner, horizon=horizon, population=population, iterations=iterations,
                      elites=elites, alpha=alpha, particles=particles)  # fmt: skip
        if planner == "icem":
            kwargs.update(noise_beta=noise_beta, population_decay=population_decay, keep_elites=keep_elites)
        opt_args = (int(horizon), low, high, int(population), int(elites), int(iterations), float(alpha))
        self.optimizer: CEM = (
            ICEM(*opt_args, noise_beta=noise_beta, population_decay=population_decay, keep_elites=keep_elites)
            if planner == "icem"
            else CEM(*opt_args)
        )
        self.config = kwargs
        self.reward_fn, self.termination_fn = model_functions(
            reward, card, env, "agent=pets", "agent=pets needs the env's termination function to stop rewards in imagined rollouts"
        )
        self.particles, self.deterministic_model = int(particles), bool(deterministic_model)
        self.fit_args: dict[str, Any] = dict(
            epochs=int(epochs), batch_size=int(batch_size), val_ratio=float(val_ratio), patience=int(patience)
        )
        self.learning_starts, self.train_every = int(learning_starts), int(train_every)

        init = torch.Generator().manual_seed(self.seed)
        self.model = EnsembleDynamics(self.obs_dim, self.action_dim, ensemble_size, model_elites, hidden,
                                      learning_rate, weight_decay, init, self.device)  # fmt: skip
        self.rng = np.random.default_rng(self.seed)
        self.generator = torch.Generator(device=self.device).manual_seed(self.seed + 1)
        self.data = Transitions(self.obs_dim, self.action_dim)
        self.mpc = MPC(self.optimizer, self._objective)
        self.eval_mpc = MPC(self.optimizer, self._objective)
        self.eval_generator = torch.Generator(device=self.device)
        self._steps: int = 0
        self._last_fit: int | None = None
        self._obs: np.ndarray | None = None
        self._planning_generator: torch.Generator | None = None
        self._reset_eval()

    @classmethod
    def requirements(cls, config: Mapping[str, Any]) -> Requirements:
        """Box actions; the first model fit comes after ``learning_starts`` random steps."""
        starts = int(config.get("learning_starts", 200))
        return Requirements(
            action_spaces=(gym.spaces.Box,),
            hint=HINT,
            label="PETS",
            first_update=starts + 1,
            imagined_rewards=True,
            first_update_why=f"it acts at random for agent.learning_starts={starts} steps before fitting its model",
        )

    # --- planning ----------------------------------------------------------------------------

    def _objective(self, obs: torch.Tensor) -> Objective:
        generator = self._planning_generator

        def objective(sequences: torch.Tensor) -> torch.Tensor:
            e, p = sequences.shape[:2]
            starts = obs.repeat_interleave(p, dim=0)
            returns = evaluate_action_sequences(
                sequences.reshape(e * p, *sequences.shape[2:]), starts, self.model, self.reward_fn,
                self.termination_fn, self.particles, generator, self.deterministic_model,
            )  # fmt: skip
            return returns.view(e, p)

        return objective

    def _plan(self, mpc: MPC, obs: np.ndarray, generator: torch.Generator) -> np.ndarray:
        self._planning_generator = generator
        x = torch.as_tensor(np.asarray(obs, np.float32).reshape(len(obs), -1), device=self.device)
        return mpc.act(x, generator).cpu().numpy().reshape(len(obs), *self.env.action_space.shape)

    def _random_actions(self, n: int, rng: np.random.Generator) -> np.ndarray:
        space = self.env.action_space
        return rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(space.dtype)

    def _reset_eval(self) -> None:
        """A fresh warm start and random stream for :meth:`act`, fixed by the seed and the step."""
        self.eval_mpc.reset()
        self.eval_generator.manual_seed(self.seed * 1_000_003 + self._steps + 7)
        self.eval_rng = np.random.default_rng([self.seed, self._steps, 7])

    # --- the agent interface -----------------------------------------------------------------

    @property
    @override
    def num_steps(self) -> int:
        return self._steps

    @override
    def train(self, steps: int, callback: TrainCallback) -> None:
        try:
            while self._steps < steps:
                if self._obs is None:  # (after a load: a new episode, the loaded warm start kept)
                    self._obs = self.env.reset()
                if self._steps >= max(self.learning_starts, 2) and (
                    self._last_fit is None or self._steps - self._last_fit >= self.train_every
                ):
                    self._fit(callback)
                obs = self._obs
                if self.model.fitted:
                    actions = self._plan(self.mpc, obs, self.generator)
                else:
                    actions = self._random_actions(len(obs), self.rng)
                next_obs, _, dones, infos = self.env.step(actions)
                real_next = np.array(next_obs, dtype=np.float32, copy=True)
                for i in np.flatnonzero(dones):
                    real_next[i] = infos[i]["terminal_observation"]
                self.data.add(
                    obs.reshape(len(obs), -1),
                    np.asarray(actions).reshape(len(obs), -1),
                    real_next.reshape(len(obs), -1),
                )
                if np.any(dones):
                    self.mpc.reset(torch.as_tensor(np.asarray(dones, bool), device=self.device))
                self._obs = next_obs
                self._steps += len(obs)
                if not callback.on_step(self._steps):
                    break
        finally:
            self._reset_eval()

    def _fit(self, callback: TrainCallback) -> None:
        d = self.data.arrays()
        stats = self.model.fit(d["obs"], d["action"], d["next_obs"], self.rng, **self.fit_args)
        self._last_fit = self._steps
        callback.on_log(self._steps, {**stats, "model_data": float(self.data.size)})

    @override
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """The planner's action for each observation (``deterministic`` is moot: MPC's best plan either way).

        Before the first model fit: uniform random actions.
        """
        obs = np.asarray(obs)
        if not self.model.fitted:
            return self._random_actions(len(obs), self.eval_rng)
        return self._plan(self.eval_mpc, obs, self.eval_generator)

    # --- checkpoints -------------------------------------------------------------------------

    @override
    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.full_state(),
            "mpc": self.mpc.state(),
            "generator": self.generator.get_state(),
        }
        torch.save(state, path / "pets.pt")
        np.savez(path / "transitions.npz", **self.data.arrays())  # type: ignore[arg-type]
        meta = {
            "steps": self._steps,
            "last_fit": self._last_fit,
            "seed": self.seed,
            "rng": self.rng.bit_generator.state,
        }
        (path / "pets.json").write_text(json.dumps(meta))

    @override
    def load(self, path: Path) -> None:
        path = Path(path)
        try:
            state = torch.load(path / "pets.pt", map_location=self.device, weights_only=False)
            self.model.load_full_state(state["model"])
        except (RuntimeError, FileNotFoundError) as exc:
            raise ConfigError(f"checkpoint {path} does not fit this agent: {str(exc).splitlines()[0]}") from exc
        self.mpc.load_state(state["mpc"])
        self.generator.set_state(state["generator"])
        with np.load(path / "transitions.npz") as arrays:
            self.data = Transitions(self.obs_dim, self.action_dim)
            self.data.add(arrays["obs"], arrays["action"], arrays["next_obs"])
        meta = json.loads((path / "pets.json").read_text())
        self._steps, self._last_fit, self.seed = int(meta["steps"]), meta["last_fit"], int(meta["seed"])
        self.rng.bit_generator.state = meta["rng"]
        self._obs = None  # the runner starts new episodes after a resume
        self._reset_eval()

    @override
    def describe(self) -> dict[str, Any]:
        return {"planner": self.config, "model_elites": self.model.elites.tolist(), "transitions": self.data.size}

    @override
    def close(self) -> None:
        self.env.close()


HINT = "PETS plans continuous actions; for a discrete-action env use ppo, a2c or dqn"
