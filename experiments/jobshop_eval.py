#!/usr/bin/env python
"""Evaluate a job-shop agent on benchmark instances: makespan, gap to the best known, time.

    python experiments/jobshop_eval.py agent=pdr agent.rule=mwkr suite=taillard sizes=15x15,20x20 out=DIR
    python experiments/jobshop_eval.py agent=cpsat agent.time_limit=60 agent.workers=2 instances=ft06,la01 out=DIR
    python experiments/jobshop_eval.py run=<run dir of a trained agent> suite=taillard out=DIR

Arguments (``key=value``):

* ``agent=`` and ``agent.<key>=``: any agent config (``experiments/conf/agent/``), as for run.py;
* ``run=``: instead of ``agent=``, a run directory: its agent with the latest checkpoint;
* ``suite=``: ``taillard`` (with ``sizes=``, default all eight sizes) or a family
  (``ta``, ``la``, ``ft``, ``abz``, ``orb``, ``swv``, ``yn``); ``instances=`` lists names instead;
* ``env.<key>=``: jobshop env settings, e.g. ``env.placement=append`` (see ``conf/env/jobshop.yaml``);
* ``out=``: output directory (required); ``seed=``, ``device=``.

Writes ``out/results.csv`` (instance, jobs, machines, makespan, best_known, gap_percent, seconds),
``out/schedules/<instance>.json`` (every schedule checked by
:func:`envs.jobshop.schedule.validate_schedule` first) and ``out/summary.json``, and prints the
mean gap per size. ``seconds`` is the agent's time on the instance (for CP-SAT: the solve; for
learned and rule agents: the dispatching episode).
"""

from __future__ import annotations

import csv
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from envs.errors import ConfigError
from experiments.cli import user_errors

OWN_KEYS = ("suite", "sizes", "instances", "run", "out", "seed", "device")


def _parse(argv: list[str]) -> tuple[dict[str, str], list[str], list[str]]:
    own, agent, env = {}, [], []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq:
            raise ConfigError(f"argument {arg!r} is not key=value; keys: {', '.join(OWN_KEYS)}, agent=, agent.<key>=, env.<key>=")
        if key in OWN_KEYS:
            own[key] = value
        elif key == "agent" or key.lstrip("+~").startswith("agent."):
            agent.append(arg)
        elif key.startswith("env."):
            env.append(arg)
        else:
            accepted = ", ".join(k + "=" for k in OWN_KEYS)
            raise ConfigError(f"unknown argument {key!r}; accepted: {accepted} agent=, agent.<key>=, env.<key>=")
    return own, agent, env


def _instances(own: dict[str, str]) -> list[str]:
    from envs.jobshop.instance import FAMILIES, benchmark_names, load_benchmark, taillard_suite

    if own.get("instances"):
        names = [s.strip() for s in own["instances"].split(",") if s.strip()]
        for name in names:
            load_benchmark(name)  # unknown names fail here, with the list of families
        return names
    suite = own.get("suite", "taillard")
    if suite == "taillard":
        sizes = [s.strip() for s in own.get("sizes", "").split(",") if s.strip()]
        from envs.jobshop.instance import TAILLARD_SIZES

        return taillard_suite(sizes or list(TAILLARD_SIZES))
    if suite in FAMILIES:
        return benchmark_names(suite)
    raise ConfigError(f"suite={suite!r} is not taillard or a family ({', '.join(FAMILIES)}); or give instances=a,b,c")


def main(argv: list[str]) -> list[dict[str, Any]]:
    """Dispatch every chosen instance with the agent and write the results (module docstring).

    Args:
        argv: ``key=value`` arguments: ``suite=``, ``sizes=``, ``instances=``, ``run=``, ``out=``,
            ``seed=``, ``device=``, ``agent=``, ``agent.<key>=`` and ``env.<key>=``.

    Returns:
        One row per instance, as in ``results.csv`` (``instance``, ``jobs``, ``machines``,
        ``makespan``, ``best_known``, ``gap_percent``, ``seconds``; ``status`` when the agent reports one).

    Raises:
        ConfigError: An unknown argument or instance, no ``out=``, or a run that cannot be evaluated here.
        RuntimeError: A schedule whose makespan disagrees with its operations.
    """
    own, agent_overrides, env_overrides = _parse(argv)
    if not own.get("out"):
        raise ConfigError("jobshop_eval.py needs out=<directory>")
    names = _instances(own)

    from omegaconf import OmegaConf

    from experiments.cli import check_composes, check_group_choices, config_dict, resolve_device
    from experiments.rundir import latest_checkpoint, write_json_atomic

    checkpoint = None
    if own.get("run"):
        if agent_overrides:
            raise ConfigError("give either run=<run dir> or agent=..., not both")
        run_dir = Path(own["run"]).expanduser()
        if not (run_dir / "config.yaml").exists():
            raise ConfigError(f"run={run_dir} is not a rewardlab run directory (it has no config.yaml)")
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint is None:
            raise ConfigError(f"run={run_dir} has no checkpoint")
        cfg = OmegaConf.load(run_dir / "config.yaml")
        if cfg.env.id != "rewardlab/JobShop-v0":
            raise ConfigError(f"run={run_dir} trained on env {cfg.env.name}, not jobshop")
        for override in env_overrides:  # e.g. env.placement=append on a trained policy
            key, _, value = override.partition("=")
            OmegaConf.update(cfg, key, OmegaConf.create({"v": value}).v if value else None, merge=False)
    else:
        check_group_choices(agent_overrides)
        cfg = check_composes(["env=jobshop", *agent_overrides, *env_overrides])

    import numpy as np
    import torch

    from agents.base import SilentCallback
    from envs.jobshop.schedule import schedule_from_json, validate_schedule
    from experiments.builders import build_agent, build_envs
    from experiments.evaluation import array_obs
    from rewards.env import EnvReward

    torch.set_num_threads(1)
    seed = int(own.get("seed", 0))
    device = resolve_device(own.get("device", "cpu"))
    out = Path(own["out"]).expanduser()
    (out / "schedules").mkdir(parents=True, exist_ok=True)
    base_env = config_dict(cfg.env)
    rows: list[dict[str, Any]] = []
    agent_info: dict[str, Any] = {}
    print(f"{'instance':<9} {'size':>7} {'makespan':>9} {'best':>7} {'gap %':>7} {'seconds':>8}", flush=True)
    for name in names:
        env_cfg = {**base_env, "instance": name, "size": None, "instance_file": None}
        reward = EnvReward()
        venv = build_envs(env_cfg, 1, seed, reward)
        instance = venv.get_attr("fixed")[0]
        agent = build_agent(cfg.agent, venv, reward, seed, device)
        if checkpoint is not None:
            agent.load(checkpoint / "agent")
        t = time.time()
        if not agent.learns:
            agent.train(0, SilentCallback())  # solvers solve here
        obs = venv.reset()
        while True:
            next_obs, _, dones, infos = venv.step(agent.act(obs, deterministic=True))
            obs = array_obs(next_obs)
            if dones[0]:
                schedule = infos[0]["schedule"]
                break
        seconds = time.time() - t
        agent_info = agent.describe()
        start, _, _ = schedule_from_json(schedule)
        makespan = validate_schedule(instance, start)
        if makespan != schedule["makespan"]:
            raise RuntimeError(f"{name}: schedule file says makespan {schedule['makespan']}, its operations give {makespan}")
        write_json_atomic(out / "schedules" / f"{name}.json", schedule)
        best = instance.best_known
        row = {
            "instance": name,
            "jobs": instance.n_jobs,
            "machines": instance.n_machines,
            "makespan": makespan,
            "best_known": best,
            "gap_percent": round(instance.gap_percent(makespan), 3) if best else None,
            "seconds": round(seconds, 3),
        }
        if agent_info.get("status"):
            row["status"] = agent_info["status"]
        rows.append(row)
        gap = "-" if row["gap_percent"] is None else f"{row['gap_percent']:.2f}"
        print(f"{name:<9} {instance.n_jobs:>3}x{instance.n_machines:<3} {makespan:>9} {best or '-':>7} {gap:>7} {seconds:>8.2f}", flush=True)
        agent.close()
        venv.close()

    fields = ["instance", "jobs", "machines", "makespan", "best_known", "gap_percent", "seconds"]
    fields += [k for k in rows[0] if k not in fields]
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    by_size: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_size[f"{row['jobs']}x{row['machines']}"].append(row)
    table = {
        size: {
            "instances": len(group),
            "mean_gap_percent": float(np.mean([r["gap_percent"] for r in group if r["gap_percent"] is not None]))
            if any(r["gap_percent"] is not None for r in group)
            else None,
            "mean_seconds": float(np.mean([r["seconds"] for r in group])),
        }
        for size, group in by_size.items()
    }
    print(f"\n{'size':>7} {'n':>3} {'mean gap %':>11} {'mean s':>8}")
    for size, figures in table.items():
        gap = "-" if figures["mean_gap_percent"] is None else f"{figures['mean_gap_percent']:.2f}"
        print(f"{size:>7} {figures['instances']:>3} {gap:>11} {figures['mean_seconds']:>8.2f}")
    agent_desc = {"run": own.get("run"), "agent": OmegaConf.to_container(cfg.agent, resolve=True), "agent_info": agent_info}
    write_json_atomic(out / "summary.json", {**agent_desc, "sizes": table, "instances": len(rows)})
    return rows


if __name__ == "__main__":
    with user_errors():
        main(sys.argv[1:])
