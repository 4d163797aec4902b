"""Hand-written reward programs: expert baselines for ``reward=code`` and few-shot examples.

Each follows the reward-code contract (:mod:`rewards.code.contract`) and passes
``python -m rewards.code check --env ENV FILE.py`` for its env (tested). ``PROGRAMS`` maps a
program's name (its file stem, the name ``reward.examples`` takes) to its env config and task.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

HERE = Path(__file__).resolve().parent


class Program(NamedTuple):
    """A shipped program: the env config it is written for and its task in words."""

    env: str
    task: str


PROGRAMS: dict[str, Program] = {
    "cartpole": Program("cartpole", "balance the pole upright with the cart near the centre"),
    "pendulum": Program("pendulum", "swing the pendulum up and hold it upright with little torque"),
    "halfcheetah": Program("halfcheetah", "make the cheetah run forward as fast as possible"),
    "halfcheetah_backwards": Program("halfcheetah", "make the cheetah run backwards"),
    "hopper": Program("hopper", "make the hopper hop forward without falling"),
    "minigrid_doorkey": Program("minigrid-doorkey-5x5", "pick up the key, open the door and reach the green goal"),
    "jobshop": Program("jobshop", "schedule all operations with the shortest makespan"),
}


def program_path(name: str) -> Path:
    """The file of a shipped program by name (e.g. ``"cartpole"``)."""
    if name not in PROGRAMS:
        raise ValueError(f"no shipped reward program named {name!r}; shipped: {', '.join(sorted(PROGRAMS))}")
    return HERE / f"{name}.py"
