#!/usr/bin/env python
"""Our IQL (agents/offline/iql.py) against d3rlpy's IQL on the same local dataset, in one run.

    python benchmarks/iql_vs_d3rlpy.py --dataset local/pendulum/random-v0 --env pendulum \
        [--steps 20000] [--seeds 0 1 2] [--batch 256] [--hidden 256 256] [--threads 1] [--device cpu]

Both get the same data, network sizes (actor, twin critics, value), batch size, optimiser
settings (Adam 3e-4, cosine-annealed actor learning rate), IQL constants (expectile 0.7, beta 3,
weight clip 100, gamma 0.99, Polyak 0.005), observation standardisation and return-based reward
scaling (x 1000 / return range), and the same number of gradient steps. Each (implementation,
seed) runs in its own process, so peak RSS is its own. Reported per implementation:

* gradient steps per second, timed over all steps after the first 100 (evaluation excluded);
* the final policy's return on the env's true reward (``--episodes`` episodes, deterministic) and
  its normalised score when the dataset has ``ref_min_score`` and ``ref_max_score``;
* peak RSS, and the dataset's size in memory for scale.

d3rlpy pins gymnasium 1.0.0, which rewardlab does not use; install it beside ours without its
pins: ``pip install --no-deps d3rlpy==2.8.1 gym==0.26.2 gym-notices && pip install structlog colorama
dataclasses-json scikit-learn click``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

WARMUP = 100


def _env(env_name: str, n: int, seed: int) -> Any:
    from omegaconf import OmegaConf

    from envs.make import make_vec_env
    from rewards.env import EnvReward
    from rewards.wrapper import RewardVecEnv

    cfg = OmegaConf.to_container(
        OmegaConf.load(Path(__file__).resolve().parents[1] / f"experiments/conf/env/{env_name}.yaml")
    )
    return RewardVecEnv(make_vec_env(cfg, n, seed), EnvReward())


def _evaluate(act: Any, env_name: str, episodes: int, seed: int) -> float:
    from experiments.evaluation import evaluate

    class Policy:
        def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
            return act(obs)

    venv = _env(env_name, min(episodes, 5), seed + 1_000_000)
    eps = evaluate(Policy(), venv, episodes, seed + 1_000_000)  # type: ignore[arg-type]
    venv.close()
    return float(np.mean([e.true_return for e in eps]))


def run_ours(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    import torch

    from agents.offline.iql import IQL
    from experiments.builders import build_dataset

    torch.manual_seed(seed)
    env = _env(args.env, 1, seed)
    data = build_dataset({"_target_": "envs.data.load", "dataset_id": args.dataset, "root": args.root}, env.provider)
    agent = IQL(
        env.observation_space,
        env.action_space,
        seed=seed,
        device=args.device,
        batch_size=args.batch,
        hidden=args.hidden,
        max_steps=args.steps,
    )
    agent.set_dataset(data)
    del data
    rss_loaded = _rss_mb()
    marks: dict[int, float] = {}

    class Callback:
        def on_step(self, n: int) -> bool:
            if n in (WARMUP, args.steps):
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                marks[n] = time.perf_counter()
            return True

        def on_log(self, n: int, values: Any) -> None:
            pass

    agent.train(args.steps, Callback())
    rate = (args.steps - WARMUP) / (marks[args.steps] - marks[WARMUP])
    ret = _evaluate(lambda o: agent.act(o, True), args.env, args.episodes, seed)
    return {"steps_per_s": rate, "return": ret, "rss_after_load_mb": rss_loaded, "refs": list(agent.reference_scores())}


def run_d3rlpy(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    import d3rlpy
    import torch
    from d3rlpy.logging import NoopAdapterFactory
    from d3rlpy.models.encoders import VectorEncoderFactory
    from d3rlpy.optimizers import AdamFactory
    from d3rlpy.optimizers.lr_schedulers import CosineAnnealingLRFactory
    from d3rlpy.preprocessing import ReturnBasedRewardScaler, StandardObservationScaler

    from envs import data as ds

    data = ds.load(args.dataset, args.root)
    d3rlpy.seed(seed)
    mdp = d3rlpy.dataset.MDPDataset(
        observations=data.observations[data.obs_index],
        actions=data.actions,
        rewards=data.true_rewards.reshape(-1, 1),
        terminals=data.terminations.astype(np.float32),
        timeouts=data.truncations.astype(np.float32),
    )
    refs = list(data.reference_scores)
    del data
    enc = VectorEncoderFactory(hidden_units=list(args.hidden))
    algo = d3rlpy.algos.IQLConfig(
        batch_size=args.batch,
        actor_learning_rate=3e-4,
        critic_learning_rate=3e-4,
        actor_optim_factory=AdamFactory(lr_scheduler_factory=CosineAnnealingLRFactory(T_max=args.steps)),
        actor_encoder_factory=enc,
        critic_encoder_factory=enc,
        value_encoder_factory=enc,
        observation_scaler=StandardObservationScaler(),
        reward_scaler=ReturnBasedRewardScaler(multiplier=1000.0),
        expectile=0.7,
        weight_temp=3.0,
        max_weight=100.0,
    ).create(device="cuda:0" if args.device.startswith("cuda") else False)
    rss_loaded = _rss_mb()
    marks: dict[int, float] = {}

    def callback(_algo: Any, _epoch: int, step: int) -> None:
        if step in (WARMUP, args.steps):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            marks[step] = time.perf_counter()

    algo.fit(
        mdp,
        n_steps=args.steps,
        n_steps_per_epoch=args.steps,
        logger_adapter=NoopAdapterFactory(),
        show_progress=False,
        save_interval=10**9,
        callback=callback,
    )
    rate = (args.steps - WARMUP) / (marks[args.steps] - marks[WARMUP])
    ret = _evaluate(lambda o: algo.predict(np.asarray(o, dtype=np.float32)), args.env, args.episodes, seed)
    return {"steps_per_s": rate, "return": ret, "rss_after_load_mb": rss_loaded, "refs": refs}


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    out = (run_ours if args.impl == "ours" else run_d3rlpy)(args, args.seed)
    out["peak_rss_mb"] = _rss_mb()
    print("RESULT " + json.dumps(out))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--env", required=True, help="env config name (experiments/conf/env/<name>.yaml) to evaluate on")
    p.add_argument("--root", default=None, help="dataset root (default: $MINARI_DATASETS_PATH or ~/.minari/datasets)")
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--impls", nargs="+", default=["ours", "d3rlpy"])
    p.add_argument("--impl", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    if args.impl:
        return child(args)

    from envs import data as ds

    meta = ds.read_metadata(args.dataset, args.root)
    lo, hi = meta.get("ref_min_score"), meta.get("ref_max_score")
    results: dict[str, list[dict[str, Any]]] = {impl: [] for impl in args.impls}
    base = [
        sys.executable,
        __file__,
        "--dataset",
        args.dataset,
        "--env",
        args.env,
        "--steps",
        str(args.steps),
        "--batch",
        str(args.batch),
        "--threads",
        str(args.threads),
        "--device",
        args.device,
        "--episodes",
        str(args.episodes),
        "--hidden",
        *map(str, args.hidden),
    ]
    if args.root:
        base += ["--root", args.root]
    for seed in args.seeds:
        for impl in args.impls:
            proc = subprocess.run(
                [*base, "--impl", impl, "--seed", str(seed)], check=False, capture_output=True, text=True
            )
            line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
            if proc.returncode != 0 or line is None:
                sys.exit(f"{impl} seed {seed} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(line[len("RESULT ") :])
            if lo is not None and hi is not None and hi != lo:
                r["normalized"] = 100 * (r["return"] - lo) / (hi - lo)
            results[impl].append(r)
            print(
                f"{impl:7s} seed {seed}: {r['steps_per_s']:7.1f} steps/s  return {r['return']:9.2f}  "
                f"normalised {r.get('normalized', float('nan')):6.1f}  peak RSS {r['peak_rss_mb']:.0f} MB",
                flush=True,
            )

    def stat(impl: str, key: str) -> tuple[float, float]:
        v = np.array([r.get(key, np.nan) for r in results[impl]], dtype=float)
        return float(v.mean()), float(v.std())

    print(
        f"\n{args.dataset}: {meta.get('total_steps')} transitions, {args.steps} gradient steps, batch {args.batch}, hidden {args.hidden}, "
        f"{args.threads} thread(s), device {args.device}, seeds {args.seeds}"
    )
    print(
        "| implementation | gradient steps/s | true return | normalised score | RSS after loading (MB) | peak RSS (MB) |"
    )
    print("|---|---|---|---|---|---|")
    for impl in args.impls:
        sps, ret, nrm = stat(impl, "steps_per_s"), stat(impl, "return"), stat(impl, "normalized")
        loaded, rss = stat(impl, "rss_after_load_mb"), stat(impl, "peak_rss_mb")
        norm = f"{nrm[0]:.1f} ± {nrm[1]:.1f}" if np.isfinite(nrm[0]) else "- (no ref_max_score)"
        print(
            f"| {impl} | {sps[0]:.1f} ± {sps[1]:.1f} | {ret[0]:.1f} ± {ret[1]:.1f} | {norm} "
            f"| {loaded[0]:.0f} | {rss[0]:.0f} |"
        )
    if set(args.impls) == {"ours", "d3rlpy"}:
        ratio = stat("ours", "steps_per_s")[0] / stat("d3rlpy", "steps_per_s")[0]
        print(f"speed ratio ours / d3rlpy: {ratio:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
