"""Job-shop scheduling: instances, the dispatching env, schedule building and checking, Gantt charts.

* :mod:`envs.jobshop.instance` - benchmark / random / file instances;
* :mod:`envs.jobshop.schedule` - the schedule-generation scheme and :func:`validate_schedule`;
* :mod:`envs.jobshop.env` - :class:`JobShopEnv`, registered as ``rewardlab/JobShop-v0``;
* :mod:`envs.jobshop.gantt` - Gantt-chart frames.

The solvers that act in this env (dispatching rules, CP-SAT) live in :mod:`agents.jobshop`.
"""
