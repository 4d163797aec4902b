#!/usr/bin/env python
"""Runner overhead: the same SB3 training through ``experiments/run.py`` and as a plain SB3 script.

    python benchmarks/runner_overhead.py [--case ppo-cartpole sac-halfcheetah] [--repeats 3]

Both sides train the same algorithm with the same hyperparameters (read from the runner's own
composed config), the same number of envs and steps, one torch thread, in fresh processes run
alternately. Printed per case (medians over repeats):

* training time: the runner's ``summary.json`` ``time_s.train`` (wall time minus setup,
  evaluation, checkpoints and video) vs the plain script's ``model.learn`` time; ratio target <= 1.10;
* whole process: wall time and peak RSS of each process (the runner also evaluates at the start
  and the end on the true reward, checkpoints, writes TensorBoard; its video is switched off here).

The plain script uses Gymnasium's own env id and SB3's ``make_vec_env`` (Monitor-wrapped
``DummyVecEnv``), the usual way to train with SB3.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CASES = {
    # name: (runner overrides, gymnasium id of the plain script)
    "ppo-cartpole": (["env=cartpole", "agent=ppo", "steps=20000"], "CartPole-v1"),
    "sac-halfcheetah": (["env=halfcheetah", "agent=sac", "steps=5000", "agent.hyperparams.learning_starts=1000"], "HalfCheetah-v5"),
}
RUNNER_FIXED = ["eval.every=1000000", "eval.episodes=1", "eval.final_episodes=1", "eval.n_envs=1", "video.final_episodes=0"]


def plain(case: str) -> None:
    """The peer: a plain SB3 script with the runner's hyperparameters (run in a subprocess)."""
    import torch
    from omegaconf import OmegaConf
    from stable_baselines3 import PPO, SAC
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.utils import LinearSchedule

    from experiments.cli import check_composes

    torch.set_num_threads(1)
    overrides, gym_id = CASES[case]
    cfg = OmegaConf.to_container(check_composes(overrides), resolve=True)
    agent = cfg["agent"]
    hp = {k: (LinearSchedule(float(v[4:]), 0.0, 1.0) if isinstance(v, str) and v.startswith("lin_") else v)
          for k, v in agent["hyperparams"].items()}  # fmt: skip
    algo = {"PPO": PPO, "SAC": SAC}[agent["algo"]]
    t0 = time.time()
    env = make_vec_env(gym_id, n_envs=agent["n_envs"], seed=cfg["seed"])
    model = algo("MlpPolicy", env, seed=cfg["seed"], device="cpu", **hp)
    setup = time.time() - t0
    t = time.time()
    model.learn(cfg["steps"])
    print(json.dumps({"train": time.time() - t, "setup": setup, "steps": model.num_timesteps}))


def _measure(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (MiB) and stdout of one child process."""
    t = time.time()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))  # fmt: skip
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    return time.time() - t, usage.ru_maxrss / 1024, out


def run_case(case: str, repeats: int) -> dict:
    overrides, _ = CASES[case]
    rows: dict[str, list[float]] = {k: [] for k in ("runner_train", "plain_train", "runner_wall", "plain_wall", "runner_rss", "plain_rss")}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            run_dir = Path(tmp) / f"run{r}"
            cmd = [sys.executable, str(REPO / "experiments/run.py"), *overrides, *RUNNER_FIXED, "progress=false", f"hydra.run.dir={run_dir}"]
            wall, rss, _ = _measure(cmd, REPO)
            summary = json.loads((run_dir / "summary.json").read_text())
            rows["runner_train"].append(summary["time_s"]["train"])
            rows["runner_wall"].append(wall)
            rows["runner_rss"].append(rss)
            wall, rss, out = _measure([sys.executable, __file__, "--plain", case], REPO)
            result = json.loads(out.strip().splitlines()[-1])
            assert result["steps"] >= summary["steps"]
            rows["plain_train"].append(result["train"])
            rows["plain_wall"].append(wall)
            rows["plain_rss"].append(rss)
    return {k: statistics.median(v) for k, v in rows.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", nargs="+", choices=sorted(CASES), default=sorted(CASES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plain", choices=sorted(CASES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain:
        plain(args.plain)
        return 0
    print(f"{'case':<16} {'train s (runner/plain)':>24} {'ratio':>6} {'process s (runner/plain)':>26} {'peak RSS MiB (runner/plain)':>29}")
    for case in args.case:
        m = run_case(case, args.repeats)
        print(
            f"{case:<16} {m['runner_train']:>11.1f} / {m['plain_train']:<10.1f} {m['runner_train'] / m['plain_train']:>6.3f} "
            f"{m['runner_wall']:>12.1f} / {m['plain_wall']:<11.1f} {m['runner_rss']:>14.0f} / {m['plain_rss']:<12.0f}",
            flush=True,
        )
    print(f"(medians of {args.repeats} alternating runs; ratio target <= 1.10)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
