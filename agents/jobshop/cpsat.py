"""``agent=cpsat``: OR-Tools CP-SAT on the env's job-shop instance, replayed as dispatching decisions.

The standard model: an interval per operation, job precedence, ``NoOverlap`` per machine,
minimise the makespan; stopped at ``time_limit`` seconds with ``workers`` search workers. The
agent then dispatches, at every step, the job whose next operation starts earliest in the
CP-SAT solution. Placing operations in that order by left-shift insertion never starts one later
than CP-SAT did (each operation's job predecessor and machine predecessors are already placed no
later than in the solution), so the env's schedule has at most the solver's makespan.

Needs a fixed instance (``env.instance=`` or ``env.instance_file=``). ``train`` solves (the
runner reports it as training time); ``describe()`` gives the solver status (OPTIMAL or FEASIBLE),
objective, best bound and time, which the runner puts in ``summary.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from typing_extensions import override

from agents.base import Agent, Requirements, SilentCallback, TrainCallback
from agents.jobshop.pdr import OPS_LEFT, check_jobshop_env, pick
from envs.errors import ConfigError
from envs.jobshop.instance import JobShopInstance


def solve(instance: JobShopInstance, time_limit: float, workers: int, seed: int = 0) -> dict[str, Any]:
    """Solve with CP-SAT; returns ``{"status", "start" (n x m list), "objective", "best_bound", "wall_time_s"}``.

    Raises:
        RuntimeError: No feasible schedule within the time limit.
    """
    from ortools.sat.python import cp_model

    d, mach = instance.durations, instance.machines
    n, m = d.shape
    horizon = int(d.sum())
    model = cp_model.CpModel()
    start = [[model.new_int_var(0, horizon, f"s{j}_{k}") for k in range(m)] for j in range(n)]
    by_machine: dict[int, list[Any]] = {}
    for j in range(n):
        for k in range(m):
            interval = model.new_fixed_size_interval_var(start[j][k], int(d[j, k]), f"i{j}_{k}")
            by_machine.setdefault(int(mach[j, k]), []).append(interval)
            if k:
                model.add(start[j][k] >= start[j][k - 1] + int(d[j, k - 1]))
    for intervals in by_machine.values():
        model.add_no_overlap(intervals)
    makespan = model.new_int_var(0, horizon, "makespan")
    model.add_max_equality(makespan, [start[j][m - 1] + int(d[j, m - 1]) for j in range(n)])
    model.minimize(makespan)
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = float(time_limit)
    solver.parameters.num_workers = int(workers)
    solver.parameters.random_seed = int(seed)
    t = time.time()
    status = solver.solve(model)
    wall = time.time() - t
    if status not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
        raise RuntimeError(f"CP-SAT found no schedule for {instance.name} in {time_limit} s ({solver.status_name(status)})")
    return {
        "status": solver.status_name(status),
        "start": [[int(solver.value(start[j][k])) for k in range(m)] for j in range(n)],
        "objective": int(solver.objective_value),
        "best_bound": int(solver.best_objective_bound),
        "wall_time_s": round(wall, 3),
    }


class CPSat(Agent):
    """CP-SAT as an agent (module docstring).

    Args:
        env: The (vector) env; its fixed instance is solved.
        time_limit: Seconds CP-SAT may search.
        workers: CP-SAT search workers (threads).
        seed: CP-SAT's random seed.
        device: Unused.
    """

    learns = False

    @classmethod
    def requirements(cls, config: Mapping[str, Any]) -> Requirements:
        """The job table of ``env=jobshop`` (its card's ``jobshop`` feature) and its discrete job choice."""
        return Requirements(
            action_spaces=(gym.spaces.Discrete,), features=frozenset({"jobshop"}), hint="it schedules jobs: use env=jobshop"
        )

    def __init__(self, env: Any, time_limit: float = 60.0, workers: int = 2, seed: int = 0, device: str = "cpu") -> None:
        if not time_limit or float(time_limit) <= 0:
            raise ConfigError(f"agent.time_limit={time_limit!r} must be a positive number of seconds")
        if int(workers) < 1:
            raise ConfigError(f"agent.workers={workers!r} must be >= 1")
        try:
            from ortools.sat.python import cp_model  # noqa: F401
        except ImportError as exc:
            raise ConfigError("agent=cpsat needs OR-Tools: pip install -e '.[jobshop]'") from exc
        check_jobshop_env(env, "cpsat")
        instances = env.get_attr("fixed") if hasattr(env, "get_attr") else [getattr(env, "fixed", None)]
        if instances[0] is None:
            raise ConfigError("agent=cpsat needs a fixed instance: env.instance=<name> (e.g. ft06) or env.instance_file=<path>")
        self.instance: JobShopInstance = instances[0]
        self.time_limit, self.workers, self.seed = float(time_limit), int(workers), int(seed)
        self.solution: dict[str, Any] | None = None

    @property
    @override
    def num_steps(self) -> int:
        return 0

    def train(self, steps: int, callback: TrainCallback) -> None:
        """Solve (once)."""
        if self.solution is None:
            self.solution = solve(self.instance, self.time_limit, self.workers, self.seed)

    @override
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        self.train(0, SilentCallback())
        assert self.solution is not None
        obs = np.asarray(obs, dtype=np.float64)  # (batch, max_jobs, features)
        n, m = self.instance.durations.shape
        start = np.asarray(self.solution["start"], dtype=np.float64)
        done = np.rint(m * (1.0 - obs[..., :n, OPS_LEFT])).astype(np.int64)  # operations scheduled per job
        next_start = np.take_along_axis(np.broadcast_to(start, (len(obs), n, m)), np.minimum(done, m - 1)[..., None], axis=2)[..., 0]
        scores = np.full(obs.shape[:2], -np.inf)
        scores[:, :n] = -next_start
        return pick(obs, scores)

    @override
    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.solution is not None:
            (path / "cpsat_solution.json").write_text(json.dumps({"instance": self.instance.name, **self.solution}))

    @override
    def load(self, path: Path) -> None:
        file = Path(path) / "cpsat_solution.json"
        if file.exists():
            data = json.loads(file.read_text())
            if data.pop("instance") != self.instance.name:
                raise ConfigError(f"{file} solves another instance than {self.instance.name}")
            self.solution = data

    @override
    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"time_limit_s": self.time_limit, "workers": self.workers}
        if self.solution is not None:
            info.update({k: v for k, v in self.solution.items() if k != "start"})
        return info
