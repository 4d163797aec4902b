"""Sweeps on a real SLURM cluster (one node on this machine, tests/slurm_cluster.py) through Hydra's
submitit launcher, as a user's cluster runs them: the same runs as the local launcher, number for number."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import slurm_cluster
from tests.conftest import _run

FAST = ["eval.episodes=2", "eval.final_episodes=2", "video.final_episodes=0", "progress=false"]
RUN = ["env=cartpole", "agent=ppo", "steps=256", "agent.n_envs=2", "agent.hyperparams.n_steps=32", *FAST]

pytestmark = [
    pytest.mark.slow,  # ~30 s (submitit polls the queue with back-off); .ci/run runs it after the default suite
    pytest.mark.skipif(
        bool(slurm_cluster.missing()), reason=f"SLURM not installed ({slurm_cluster.missing()}); .ci/run installs it"
    ),
]


def _summaries(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]


def test_a_sweep_on_slurm_gives_the_local_launchers_runs(tmp_path: Path) -> None:
    with slurm_cluster.slurm_cluster(tmp_path / "cluster") as env:
        slurm = ["-m", "hydra/launcher=submitit_slurm", f"hydra.launcher.partition={slurm_cluster.PARTITION}"]
        slurm += ["hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=5", "hydra.launcher.array_parallelism=2"]
        out = _run("run.py", [*slurm, *RUN, "seed=0,1", "hydra.sweep.dir=slurm"], tmp_path, timeout=240, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    on_slurm = _summaries(tmp_path / "slurm")
    assert [s["seed"] for s in on_slurm] == [0, 1]
    # the jobs ran under SLURM (submitit's job folder holds one log per array task)
    assert len(list((tmp_path / "slurm" / ".submitit").glob("*/*_log.out"))) == 2
    out = _run("run.py", ["-m", *RUN, "seed=0,1", "hydra/launcher=basic", "hydra.sweep.dir=local"], tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    local = _summaries(tmp_path / "local")
    for a, b in zip(on_slurm, local, strict=True):
        assert (a["seed"], a["true_return_mean"], a["proxy_return_mean"]) == (b["seed"], b["true_return_mean"], b["proxy_return_mean"])
