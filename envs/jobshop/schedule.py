"""Building a job-shop schedule one dispatch at a time, and checking any schedule.

Schedule-generation scheme (as L2D, Zhang et al. 2020): dispatching a job schedules its next
operation at the *earliest* time it fits on its machine, at or after the job's previous
operation ends -- in an idle gap between operations already on the machine if one is long enough
(a permissible left shift), else after the machine's last operation. Every schedule built this
way is *active* (no operation can start earlier without delaying another), and a dispatching
order that follows the start times of any schedule rebuilds a schedule at least as good.
Dispatching rules therefore score jobs, not start times; the placement is this one.

``placement="append"`` is offered for comparison: the operation starts when both its job and its
machine are free, after everything already on the machine (no gap insertion). Such schedules
are semi-active and usually much longer; dispatching-rule results published with this scheme
are not comparable with results under insertion.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

import numpy as np

from envs.jobshop.instance import JobShopInstance


class ScheduleBuilder:
    """Partial schedule of one instance; ``dispatch(job)`` places the job's next operation.

    Attributes:
        start: ``(n_jobs, n_ops)`` start times, -1 where not scheduled yet.
        next_op: ``(n_jobs,)`` index of each job's next unscheduled operation (``n_ops`` when done).
        ready: ``(n_jobs,)`` end time of each job's last scheduled operation.
    """

    PLACEMENTS = ("insert", "append")

    def __init__(self, instance: JobShopInstance, placement: str = "insert") -> None:
        if placement not in self.PLACEMENTS:
            from envs.errors import ConfigError

            raise ConfigError(f"placement={placement!r} is not one of {', '.join(self.PLACEMENTS)}")
        self.instance = instance
        self.append = placement == "append"
        n, m = instance.durations.shape
        self.start = np.full((n, m), -1, dtype=np.int64)
        self.next_op = np.zeros(n, dtype=np.int64)
        self.ready = np.zeros(n, dtype=np.int64)
        self._starts: list[list[int]] = [[] for _ in range(instance.n_machines)]  # per machine, sorted
        self._ends: list[list[int]] = [[] for _ in range(instance.n_machines)]
        self.n_scheduled = 0

    @property
    def done(self) -> bool:
        """Every operation is scheduled."""
        return self.n_scheduled == self.instance.durations.size

    def earliest_start(self, job: int) -> int:
        """Where the job's next operation would start if dispatched now (left-shift insertion)."""
        k = int(self.next_op[job])
        machine = int(self.instance.machines[job, k])
        duration = int(self.instance.durations[job, k])
        starts, ends = self._starts[machine], self._ends[machine]
        t = int(self.ready[job])
        if self.append:
            return max(t, max(ends, default=0))
        # Intervals on a machine never overlap, so ends are sorted too: skip those ending by t.
        for i in range(bisect_right(ends, t), len(starts)):
            if t + duration <= starts[i]:
                return t
            t = max(t, ends[i])
        return t

    def dispatch(self, job: int) -> tuple[int, int]:
        """Schedule the job's next operation; returns its ``(start, end)``."""
        k = int(self.next_op[job])
        machine = int(self.instance.machines[job, k])
        start = self.earliest_start(job)
        end = start + int(self.instance.durations[job, k])
        i = bisect_left(self._starts[machine], start)
        self._starts[machine].insert(i, start)
        self._ends[machine].insert(i, end)
        self.start[job, k] = start
        self.next_op[job] = k + 1
        self.ready[job] = end
        self.n_scheduled += 1
        return start, end

    def makespan(self) -> int:
        """Latest end time of the operations scheduled so far."""
        return int(self.ready.max())


def validate_schedule(instance: JobShopInstance, start: np.ndarray) -> int:
    """Check a complete schedule; return its makespan.

    Checks: every operation scheduled at a time >= 0, operations of a job in order (each starts
    at or after its predecessor ends), no two operations overlap on a machine.

    Args:
        instance: The instance.
        start: ``(n_jobs, n_ops)`` start times.

    Raises:
        ValueError: The first violated constraint, naming the operations.
    """
    start = np.asarray(start, dtype=np.int64)
    d, mach = instance.durations, instance.machines
    if start.shape != d.shape:
        raise ValueError(f"schedule has shape {start.shape}, the instance {d.shape}")
    if (start < 0).any():
        j, k = np.argwhere(start < 0)[0]
        raise ValueError(f"operation ({j}, {k}) is not scheduled (start {start[j, k]})")
    end = start + d
    late = start[:, 1:] < end[:, :-1]
    if late.any():
        j, k = np.argwhere(late)[0]
        raise ValueError(f"job {j}: operation {k + 1} starts at {start[j, k + 1]} before operation {k} ends at {end[j, k]}")
    for machine in range(instance.n_machines):
        jobs, ops = np.nonzero(mach == machine)
        order = np.argsort(start[jobs, ops], kind="stable")
        s, e = start[jobs, ops][order], end[jobs, ops][order]
        clash = s[1:] < e[:-1]
        if clash.any():
            i = int(np.flatnonzero(clash)[0])
            a, b = (jobs[order][i], ops[order][i]), (jobs[order][i + 1], ops[order][i + 1])
            raise ValueError(f"machine {machine}: operations {a} [{s[i]}, {e[i]}) and {b} [{s[i + 1]}, {e[i + 1]}) overlap")
    return int(end.max())


def schedule_json(instance: JobShopInstance, start: np.ndarray) -> dict:
    """``{"instance", "makespan", "operations": [{"job", "index", "machine", "start", "duration"}]}``."""
    start = np.asarray(start, dtype=np.int64)
    ops = [
        {
            "job": j,
            "index": k,
            "machine": int(instance.machines[j, k]),
            "start": int(start[j, k]),
            "duration": int(instance.durations[j, k]),
        }
        for j in range(instance.n_jobs)
        for k in range(instance.n_ops)
    ]
    return {"instance": instance.name, "makespan": int((start + instance.durations).max()), "operations": ops}


def schedule_from_json(data: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(start, durations, machines)`` matrices back from :func:`schedule_json` (-1 where missing)."""
    ops = data["operations"]
    n = max(o["job"] for o in ops) + 1
    m = max(o["index"] for o in ops) + 1
    start, dur, mach = (np.full((n, m), -1, dtype=np.int64) for _ in range(3))
    for o in ops:
        start[o["job"], o["index"]] = o["start"]
        dur[o["job"], o["index"]] = o["duration"]
        mach[o["job"], o["index"]] = o["machine"]
    return start, dur, mach
