#!/usr/bin/env python
"""PETS planning speed: our MPC (agents/model_based/planning.py) against mbrl-lib's, in one run.

    python benchmarks/pets_vs_mbrl.py --mbrl-python /path/to/side-venv/bin/python
        [--planner cem icem] [--horizon 30] [--population 400] [--particles 20] [--iterations 5]
        [--actions 10] [--threads 1] [--device cpu]

Both plan for HalfCheetah-sized problems (17-dimensional observations, 6-dimensional actions in
[-1, 1]) with mbrl-lib's PETS settings for halfcheetah by default: a 7-member ensemble of Gaussian MLPs
(4 hidden layers of 200, SiLU), 5 elites, trajectory sampling where each particle follows one elite
member, delta-state targets, input normalisation, horizon 30, 5 optimiser iterations, 10 % elites,
momentum 0.1, and the same closed-form reward, HalfCheetah's ``x-velocity - 0.1 |a|^2`` on the next
observation. The networks are untrained (timing does not depend on the weights). Each side plans
``--actions`` consecutive actions with warm starts (MPC, replanning every step), after one action
of warm-up; reported: median and mean seconds per action, and the ratio mbrl-lib / ours (> 1: ours
is faster).

mbrl-lib 0.2.0 pins hydra-core 1.0 (which does not import on Python 3.11) and gymnasium 0.26, so it
runs in a side environment: ``python -m venv V && V/bin/pip install torch numpy 'omegaconf>=2.1'
hydra-core==1.3.2 gymnasium==0.26.3 termcolor tqdm && V/bin/pip install --no-deps mbrl==0.2.0``.
Its optimiser settings: ``CEMOptimizer`` (elite_ratio 0.1, alpha 0.1, unclipped normal) and
``ICEMOptimizer`` (population decay 1.25, coloured-noise exponent 2, keep 30 % of the elites), as our
``agent=pets`` defaults.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OBS, ACT, VEL = 17, 6, 8  # HalfCheetah-v5 observation size, action size, index of the x velocity

MBRL_SIDE = r"""
import json, sys, time
import numpy as np, omegaconf, torch
import gymnasium as gym
import mbrl.models as models, mbrl.planning as planning

args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
torch.manual_seed(0)
device = args["device"]
OBS, ACT, VEL = args["obs"], args["act"], args["vel"]

def reward_fn(act, next_obs):
    return (next_obs[:, VEL] - 0.1 * (act ** 2).sum(-1)).unsqueeze(-1)

def termination_fn(act, next_obs):
    return torch.zeros(len(next_obs), 1, dtype=torch.bool, device=next_obs.device)

class Spaces:
    observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (ACT,), np.float32)

net = models.GaussianMLP(OBS + ACT, OBS, device, num_layers=4, ensemble_size=7, hid_size=200,
                         propagation_method="fixed_model", activation_fn_cfg={"_target_": "torch.nn.SiLU"})
dynamics = models.OneDTransitionRewardModel(net, target_is_delta=True, normalize=True, learned_rewards=False, num_elites=5)
dynamics.set_elite(range(5))
model_env = models.ModelEnv(Spaces(), dynamics, termination_fn, reward_fn, generator=torch.Generator(device=device))
common = {"num_iterations": args["iterations"], "elite_ratio": 0.1, "population_size": args["population"],
          "alpha": 0.1, "device": device, "lower_bound": "???", "upper_bound": "???", "return_mean_elites": False}
if args["planner"] == "cem":
    cfg = {"_target_": "mbrl.planning.CEMOptimizer", "clipped_normal": False, **common}
else:
    cfg = {"_target_": "mbrl.planning.ICEMOptimizer", "population_decay_factor": 1.25,
           "colored_noise_exponent": 2.0, "keep_elite_frac": 0.3, **common}
agent = planning.TrajectoryOptimizerAgent(omegaconf.OmegaConf.create(cfg), [-1.0] * ACT, [1.0] * ACT,
                                          planning_horizon=args["horizon"], replan_freq=1, keep_last_solution=True)
agent.set_trajectory_eval_fn(lambda initial_state, action_sequences: model_env.evaluate_action_sequences(
    action_sequences, initial_state=initial_state, num_particles=args["particles"]))
obs = np.random.default_rng(0).standard_normal(OBS).astype(np.float32)
times = []
for i in range(args["actions"] + 1):
    t = time.perf_counter()
    agent.act(obs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    times.append(time.perf_counter() - t)
print(json.dumps(times[1:]))
"""


def ours(planner: str, horizon: int, population: int, particles: int, iterations: int, actions: int,
         threads: int, device: str) -> list[float]:  # fmt: skip
    import torch

    from agents.model_based.dynamics import EnsembleDynamics
    from agents.model_based.planning import CEM, ICEM, MPC, evaluate_action_sequences

    torch.set_num_threads(threads)
    gen = torch.Generator(device=device)
    gen.manual_seed(0)
    model = EnsembleDynamics(OBS, ACT, members=7, elites=5, hidden=(200,) * 4, device=device).eval()
    low, high = -torch.ones(ACT, device=device), torch.ones(ACT, device=device)
    elites = max(1, round(0.1 * population))
    if planner == "cem":
        optimizer: CEM = CEM(horizon, low, high, population, elites, iterations, alpha=0.1)
    else:
        optimizer = ICEM(horizon, low, high, population, elites, iterations, alpha=0.1, noise_beta=2.0,
                         population_decay=1.25, keep_elites=0.3)  # fmt: skip

    def reward_fn(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
        return next_obs[:, VEL] - 0.1 * (act**2).sum(-1)

    def objective_for(obs: torch.Tensor):  # type: ignore[no-untyped-def]
        def objective(seqs: torch.Tensor) -> torch.Tensor:
            e, p = seqs.shape[:2]
            returns = evaluate_action_sequences(
                seqs.reshape(e * p, *seqs.shape[2:]), obs.repeat_interleave(p, 0), model, reward_fn, None, particles, gen
            )
            return returns.view(e, p)

        return objective

    mpc = MPC(optimizer, objective_for)
    import numpy as np

    obs = torch.as_tensor(np.random.default_rng(0).standard_normal((1, OBS)).astype(np.float32), device=device)
    times = []
    for _ in range(actions + 1):
        t = time.perf_counter()
        mpc.act(obs, gen)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mbrl-python", required=True, help="python of a side environment with mbrl-lib 0.2.0")
    parser.add_argument("--planner", nargs="+", default=["cem", "icem"], choices=["cem", "icem"])
    parser.add_argument("--horizon", type=int, default=30)
    parser.add_argument("--population", type=int, default=400)
    parser.add_argument("--particles", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--actions", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    a = parser.parse_args()
    print(
        f"PETS planning, HalfCheetah sizes (obs {OBS}, act {ACT}), ensemble 7x4x200 (5 elites), horizon {a.horizon}, "
        f"population {a.population}, particles {a.particles}, iterations {a.iterations}, {a.actions} actions, "
        f"{a.threads} thread(s), {a.device}"
    )
    for planner in a.planner:
        mine = ours(planner, a.horizon, a.population, a.particles, a.iterations, a.actions, a.threads, a.device)
        spec = {"planner": planner, "horizon": a.horizon, "population": a.population, "particles": a.particles,
                "iterations": a.iterations, "actions": a.actions, "threads": a.threads, "device": a.device,
                "obs": OBS, "act": ACT, "vel": VEL}  # fmt: skip
        done = subprocess.run([a.mbrl_python, "-c", MBRL_SIDE, json.dumps(spec)], capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"mbrl-lib side failed:\n{done.stderr[-3000:]}")
        theirs = json.loads(done.stdout.strip().splitlines()[-1])
        m, t = statistics.median(mine), statistics.median(theirs)
        print(
            f"  {planner:4s}  ours {m:7.3f} s/action (mean {statistics.mean(mine):.3f})   "
            f"mbrl-lib {t:7.3f} s/action (mean {statistics.mean(theirs):.3f})   ratio mbrl-lib/ours {t / m:.2f}"
        )


if __name__ == "__main__":
    main()
