"""``JobShopEnv``: job-shop scheduling as a dispatching MDP (registered as ``rewardlab/JobShop-v0``).

* **Action**: a job index; its next operation is placed by left-shift insertion
  (:mod:`envs.jobshop.schedule`). ``action_masks()`` (sb3-contrib's convention) and
  ``info["action_mask"]`` mark the jobs with operations left. An action naming a finished or
  padded job dispatches the lowest-numbered unfinished job instead (``info["invalid_action"]``):
  the env stays total, masked agents never trigger it.
* **Observation**: ``(max_jobs, 12)`` float32, one row per job (rows past the instance's jobs and
  of finished jobs are zero), so a per-job network works for any instance up to ``max_jobs``:

  ==  =========================================================================================
  0   1 if the job has operations left
  1   duration of its next operation / d_max
  2   work left, next operation included / (m d_max)
  3   operations left / m
  4   work done, next operation included (the flow due date of FDD) / (m d_max)
  5   time the job is free (end of its last operation) - t0, / d_max
  6   earliest start of its next operation if dispatched now - t0, / d_max
  7   idle wait this start implies (6 - 5)
  8   unscheduled work on the next operation's machine / (m d_max)
  9   slack: current makespan lower bound - this job's lower bound, / (m d_max)
  10  increase of the makespan lower bound if the job is dispatched now / d_max
  11  fraction of all operations scheduled
  ==  =========================================================================================

  ``t0`` is the earliest start over all jobs, ``d_max`` the longest operation, ``m`` the
  operations per job. Columns 1-5 are exactly what the classic dispatching rules score.
* **Reward** (dense, as L2D): the decrease of the makespan lower bound ``H``, where ``H`` is the
  largest lower bound of any operation's end (scheduled: its end; unscheduled: the job's last
  end plus the durations before it). ``H`` starts at the longest job and ends at the makespan, so
  an episode's rewards sum to ``H_0 - makespan``: minus the makespan up to a per-instance constant.
* **Instances**: a fixed benchmark (``instance="ta01"``), a file (``instance_file=``), or a new
  random Taillard-style instance at every reset (``size="15x15"``); ``reset(options={"instance":
  JobShopInstance})`` sets one explicitly.
* ``info``: ``makespan`` (latest end so far), ``lower_bound`` (``H``); at the end also ``schedule``
  (JSON, see :func:`envs.jobshop.schedule.schedule_json`), ``episode_metrics`` (``makespan``,
  and ``best_known`` and ``gap`` in percent where the instance has a best-known makespan) and
  ``episode_artifacts`` (``schedules/<instance>.json``, written by the runner).
* ``render()``: an ``rgb_array`` Gantt chart (machines as rows, jobs as colours).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from typing_extensions import override

from envs.cards import EnvCard
from envs.errors import ConfigError
from envs.jobshop.instance import JobShopInstance, load_benchmark, parse_instance_file, parse_size, random_instance
from envs.jobshop.schedule import ScheduleBuilder, schedule_json

N_FEATURES = 12


class JobShopEnv(gym.Env):
    """Job-shop dispatching env (module docstring).

    Args:
        instance: Benchmark name (``ta01``, ``ft06``, ``la01``, ...).
        size: ``"<jobs>x<machines>"``: a new random instance every episode (used when neither
            ``instance`` nor ``instance_file`` is given).
        instance_file: A Taillard / OR-Library instance file.
        max_jobs: Rows of the observation (``None``: the instance's jobs). A policy trained with
            ``max_jobs=N`` runs on any instance of up to ``N`` jobs.
        placement: ``"insert"`` (left-shift insertion, active schedules) or ``"append"``
            (semi-active, for comparison with results published under that scheme).
        render_mode: ``"rgb_array"`` or ``None``.
        render_width: Gantt chart width in pixels.
        render_height: Gantt chart height in pixels.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012  (Gymnasium types it as an instance dict: no ClassVar)

    def __init__(
        self,
        instance: str | None = None,
        size: str | None = "15x15",
        instance_file: str | None = None,
        max_jobs: int | None = None,
        placement: str = "insert",
        render_mode: str | None = None,
        render_width: int = 512,
        render_height: int = 288,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode={render_mode!r}: JobShopEnv renders rgb_array only")
        self.fixed: JobShopInstance | None = None
        if instance_file:
            self.fixed = parse_instance_file(instance_file)
        elif instance:
            self.fixed = load_benchmark(str(instance))
        elif size:
            self.size = parse_size(size)
        else:
            raise ConfigError("the jobshop env needs instance=<name>, instance_file=<path> or size=<jobs>x<machines>")
        n_jobs = self.fixed.n_jobs if self.fixed is not None else self.size[0]
        self.max_jobs = int(max_jobs) if max_jobs else n_jobs
        if n_jobs > self.max_jobs:
            raise ConfigError(f"the instance has {n_jobs} jobs, more than max_jobs={self.max_jobs}")
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (self.max_jobs, N_FEATURES), np.float32)
        self.action_space = gym.spaces.Discrete(self.max_jobs)
        self.placement = placement
        ScheduleBuilder(random_instance(1, 1, np.random.default_rng(0)), placement)  # validate early
        self.render_mode = render_mode
        self.render_width, self.render_height = int(render_width), int(render_height)
        self.instance: JobShopInstance = self.fixed if self.fixed is not None else random_instance(*self.size, np.random.default_rng(0))
        self._start_episode(self.instance)

    # --- episode ---------------------------------------------------------------------------

    def _start_episode(self, instance: JobShopInstance) -> None:
        if instance.n_jobs > self.max_jobs:
            raise ConfigError(f"instance {instance.name} has {instance.n_jobs} jobs, more than max_jobs={self.max_jobs}")
        self.instance = instance
        d = instance.durations.astype(np.float64)
        n, m = d.shape
        self.builder = ScheduleBuilder(instance, self.placement)
        # suffix[j, k] = work of operations k.. of job j; suffix[j, m] = 0
        self._suffix = np.concatenate([np.cumsum(d[:, ::-1], axis=1)[:, ::-1], np.zeros((n, 1))], axis=1)
        self._total = self._suffix[:, 0].copy()
        self._job_lb = self._total.copy()  # lower bound of each job's completion
        self.lower_bound = float(self._job_lb.max())  # H
        self.initial_lower_bound = self.lower_bound
        self._machine_work = np.bincount(instance.machines.ravel(), weights=d.ravel(), minlength=instance.n_machines)
        self._est = np.zeros(n, dtype=np.float64)  # earliest start of each job's next operation
        self._dmax = float(d.max())
        self._scale = self._dmax * m

    @override
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if options and options.get("instance") is not None:
            instance = options["instance"]
        elif self.fixed is not None:
            instance = self.fixed
        else:
            instance = random_instance(*self.size, self.np_random)
            instance = JobShopInstance(
                name=f"{instance.name}_{int(self.np_random.integers(1 << 31))}",
                durations=instance.durations,
                machines=instance.machines,
            )
        self._start_episode(instance)
        return self._observation(), self._info()

    def action_masks(self) -> np.ndarray:
        """``(max_jobs,)`` bool: jobs with operations left (sb3-contrib's MaskablePPO calls this)."""
        mask = np.zeros(self.max_jobs, dtype=bool)
        mask[: self.instance.n_jobs] = self.builder.next_op < self.instance.n_ops
        return mask

    @override
    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        job = int(action)
        b = self.builder
        if b.done:
            raise RuntimeError("step() called after the schedule is complete; call reset()")
        invalid = not (0 <= job < self.instance.n_jobs and b.next_op[job] < self.instance.n_ops)
        if invalid:
            job = int(np.flatnonzero(b.next_op < self.instance.n_ops)[0])
        machine = int(self.instance.machines[job, b.next_op[job]])
        _, end = b.dispatch(job)
        k = int(b.next_op[job])
        self._job_lb[job] = end + self._suffix[job, k]
        self._machine_work[machine] -= self.instance.durations[job, k - 1]
        previous = self.lower_bound
        self.lower_bound = float(self._job_lb.max())
        reward = previous - self.lower_bound
        # Earliest starts change only for this job and for jobs whose next operation uses `machine`.
        n_ops = self.instance.n_ops
        pending = b.next_op < n_ops
        nxt = np.minimum(b.next_op, n_ops - 1)
        affected = np.flatnonzero(pending & (self.instance.machines[np.arange(self.instance.n_jobs), nxt] == machine))
        for j in set(affected.tolist()) | ({job} if pending[job] else set()):
            self._est[j] = b.earliest_start(j)
        terminated = b.done
        info = self._info()
        if invalid:
            info["invalid_action"] = True
        if terminated:
            info.update(self._final_info())
        return self._observation(), float(reward), terminated, False, info

    # --- observation and info --------------------------------------------------------------

    def _observation(self) -> np.ndarray:
        inst, b = self.instance, self.builder
        n, m = inst.n_jobs, inst.n_ops
        obs = np.zeros((self.max_jobs, N_FEATURES), dtype=np.float32)
        valid = b.next_op < m
        if not valid.any():
            return obs
        jobs = np.arange(n)
        k = np.minimum(b.next_op, m - 1)
        d = inst.durations[jobs, k].astype(np.float64)
        rem = self._suffix[jobs, k]
        ready = b.ready.astype(np.float64)
        est = self._est
        t0 = est[valid].min()
        dmax, scale = self._dmax, self._scale
        rows = np.stack(
            [
                np.ones(n),
                d / dmax,
                rem / scale,
                (m - k) / m,
                (self._total - rem + d) / scale,
                (ready - t0) / dmax,
                (est - t0) / dmax,
                (est - ready) / dmax,
                self._machine_work[inst.machines[jobs, k]] / scale,
                (self.lower_bound - self._job_lb) / scale,
                np.maximum(0.0, est + rem - self.lower_bound) / dmax,
                np.full(n, b.n_scheduled / inst.durations.size),
            ],
            axis=1,
        )
        obs[:n][valid] = rows[valid]
        return obs

    def _info(self) -> dict[str, Any]:
        return {"action_mask": self.action_masks(), "makespan": self.builder.makespan(), "lower_bound": self.lower_bound}

    def _final_info(self) -> dict[str, Any]:
        inst = self.instance
        schedule = schedule_json(inst, self.builder.start)
        metrics: dict[str, float] = {"makespan": float(schedule["makespan"])}
        if inst.best_known:
            metrics["best_known"] = float(inst.best_known)
            gap = inst.gap_percent(schedule["makespan"])
            if gap is not None:  # always, with a best-known makespan
                metrics["gap"] = gap
        return {
            "schedule": schedule,
            "episode_metrics": metrics,
            "episode_artifacts": {f"schedules/{inst.name}.json": schedule},
        }

    # --- rendering ---------------------------------------------------------------------------

    @override
    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        from envs.jobshop.gantt import draw_gantt

        horizon = max(self.lower_bound, float(self.instance.best_known or 0), 1.0)
        return draw_gantt(self.instance, self.builder.start, horizon, self.render_width, self.render_height)


def make_jobshop(render_mode: str | None = None, render_width: int = 512, render_height: int = 288, **kwargs: Any) -> gym.Env:
    """Entry point of ``rewardlab/JobShop-v0`` (keyword arguments: :class:`JobShopEnv`)."""
    return JobShopEnv(render_mode=render_mode, render_width=render_width, render_height=render_height, **kwargs)


def describe(env: gym.Env) -> str | None:
    """Prompt layout of the ``(max_jobs, 12)`` observation (``None`` for another observation)."""
    shape = tuple(env.observation_space.shape or ())
    if len(shape) != 2:
        return None
    rows = shape[0]
    return (
        "Job-shop scheduling as dispatching: each step the agent picks a job, and that job's next operation "
        "is placed in the schedule as early as its machine allows. The goal is a short makespan (the end of "
        "the last operation).\n"
        f"obs: float array (B, {rows}, {N_FEATURES}), one row per job (finished or padded jobs: all zeros);\n"
        "  t0 = earliest start over all jobs, d_max = longest operation, m = operations per job:\n"
        "obs[:, j, 0]   1 if job j has operations left\n"
        "obs[:, j, 1]   duration of its next operation / d_max\n"
        "obs[:, j, 2]   work left, next operation included / (m d_max)\n"
        "obs[:, j, 3]   operations left / m\n"
        "obs[:, j, 4]   work done, next operation included / (m d_max)\n"
        "obs[:, j, 5]   time the job is free - t0, / d_max\n"
        "obs[:, j, 6]   earliest start of its next operation if dispatched now - t0, / d_max\n"
        "obs[:, j, 7]   idle wait that start implies (column 6 - column 5)\n"
        "obs[:, j, 8]   unscheduled work on the next operation's machine / (m d_max)\n"
        "obs[:, j, 9]   slack: current makespan lower bound - this job's lower bound, / (m d_max)\n"
        "obs[:, j, 10]  increase of the makespan lower bound if job j is dispatched now / d_max\n"
        "obs[:, j, 11]  fraction of all operations scheduled\n"
        f"action: (B,) integers, the job index in [0, {rows}); only jobs with column 0 == 1 are chosen.\n"
        "Use np.take_along_axis(obs, action[:, None, None], axis=1)[:, 0] for the chosen job's row in obs.\n"
        "The episode ends when every operation is scheduled."
    )


def action_mask(obs: np.ndarray) -> np.ndarray:
    """``(batch, max_jobs, N_FEATURES)`` observations -> ``(batch, max_jobs)`` bool: jobs with operations left.

    The same mask as :meth:`JobShopEnv.action_masks`, read from the observation's column 0 (1 for a job
    with operations left, 0 for finished and padded jobs).
    """
    return np.asarray(obs)[..., 0] > 0.5


CARDS = (
    EnvCard(
        base_id="JobShop-v0",
        entry_point="envs.jobshop.env:make_jobshop",
        describe=describe,
        features=frozenset({"action_masks", "jobshop"}),
        action_mask=action_mask,
        disable_env_checker=False,  # make_jobshop builds the env itself: Gymnasium's checker wraps it
    ),
)
