"""Hydra's task function behind ``experiments/run.py``, in an importable module.

Sweep workers (Hydra's joblib launcher runs jobs in loky processes; submitit on SLURM) receive the
task function by reference and import this module, so what the configs need at resolution time
(the ``rewardlab.swept`` resolver that names sweep folders) is registered there too.
"""

from __future__ import annotations

from omegaconf import DictConfig

from experiments.cli import register_resolvers

register_resolvers()


def main(cfg: DictConfig) -> float:
    """Run one experiment of the composed config (:func:`experiments.runner.run`).

    Args:
        cfg: The config Hydra composed from ``experiments/conf/config.yaml`` and the overrides.

    Returns:
        The final mean true return (the objective a Hydra sweeper reads).
    """
    from experiments.runner import run

    return run(cfg)
