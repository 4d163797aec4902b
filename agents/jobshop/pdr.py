"""``agent=pdr agent.rule=...``: priority dispatching rules for ``env=jobshop`` (no training).

Each rule scores the jobs that have operations left from the env's observation (columns of
:mod:`envs.jobshop.env`) and dispatches the best one; ties go to the lowest job number.

=========  =====================================================================================
rule       dispatches the job ...
=========  =====================================================================================
spt        whose next operation is shortest (shortest processing time)
lpt        whose next operation is longest (longest processing time)
mwkr       with the most work remaining (next operation included)
mopnr      with the most operations remaining
fdd_mwkr   with the smallest ratio flow-due-date / work remaining, where the flow due date is the
           job's work up to and including its next operation
fifo       that has been free the longest (earliest end of its last operation)
=========  =====================================================================================

Where the operation starts is not the rule's choice: the env places it by left-shift insertion.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from typing_extensions import override

from agents.base import Agent, Requirements, TrainCallback
from envs.errors import ConfigError

# Observation columns (envs/jobshop/env.py).
VALID, NEXT_DURATION, WORK_LEFT, OPS_LEFT, FLOW_DUE_DATE, FREE_SINCE = 0, 1, 2, 3, 4, 5


def _scores(obs: np.ndarray, rule: str) -> np.ndarray:
    """Higher is better; ``(batch, max_jobs)``."""
    if rule == "spt":
        return -obs[..., NEXT_DURATION]
    if rule == "lpt":
        return obs[..., NEXT_DURATION]
    if rule == "mwkr":
        return obs[..., WORK_LEFT]
    if rule == "mopnr":
        return obs[..., OPS_LEFT]
    if rule == "fdd_mwkr":
        return -obs[..., FLOW_DUE_DATE] / np.maximum(obs[..., WORK_LEFT], 1e-12)
    if rule == "fifo":
        return -obs[..., FREE_SINCE]
    raise ConfigError(f"agent.rule={rule!r} is not one of {', '.join(RULES)}")


RULES = ("spt", "lpt", "mwkr", "mopnr", "fdd_mwkr", "fifo")


def check_jobshop_env(env: Any, agent: str) -> None:
    """Refuse envs whose observation is not the jobshop job table."""
    from envs.jobshop.env import N_FEATURES

    shape = getattr(getattr(env, "observation_space", None), "shape", None)
    if shape is None or len(shape) != 2 or shape[1] != N_FEATURES:
        raise ConfigError(f"agent={agent} schedules jobs and works with env=jobshop only (this env observes {shape})")


def pick(obs: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """The best-scoring job with operations left, per observation; ties to the lowest index."""
    masked = np.where(obs[..., VALID] > 0.5, scores, -np.inf)
    return masked.argmax(axis=-1)


class DispatchingRule(Agent):
    """A priority dispatching rule as an agent (module docstring).

    Args:
        rule: One of ``spt, lpt, mwkr, mopnr, fdd_mwkr, fifo``.
        env: The env (unused: rules need no instance data beyond the observation).
        seed: Unused (rules are deterministic).
        device: Unused.
    """

    learns = False

    @classmethod
    def requirements(cls, config: Mapping[str, Any]) -> Requirements:
        """The job table of ``env=jobshop`` (its card's ``jobshop`` feature) and its discrete job choice."""
        return Requirements(
            action_spaces=(gym.spaces.Discrete,), features=frozenset({"jobshop"}), hint="it schedules jobs: use env=jobshop"
        )

    def __init__(self, rule: str = "mwkr", env: Any = None, seed: int = 0, device: str = "cpu") -> None:
        if rule not in RULES:
            raise ConfigError(f"agent.rule={rule!r} is not one of {', '.join(RULES)}")
        if env is not None:
            check_jobshop_env(env, "pdr")
        self.rule = rule

    @property
    @override
    def num_steps(self) -> int:
        return 0

    def train(self, steps: int, callback: TrainCallback) -> None:
        """Rules do not learn."""

    @override
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        return pick(obs, _scores(obs, self.rule))

    @override
    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "rule.txt").write_text(self.rule + "\n")

    @override
    def load(self, path: Path) -> None:
        saved = (Path(path) / "rule.txt").read_text().strip()
        if saved != self.rule:
            raise ConfigError(f"checkpoint {path} holds rule {saved!r}, the agent is configured with {self.rule!r}")

    @override
    def describe(self) -> dict[str, Any]:
        return {"rule": self.rule}
