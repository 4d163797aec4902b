"""The run directory's schema: ``summary.json`` as a dataclass, and the columns of ``metrics.csv``.

The runner writes a :class:`RunSummary` when a run completes; :mod:`experiments.summarize` (and any
report over many runs) reads them back with :meth:`RunSummary.load`, so both sides share one
definition of what a run reports. Env-specific figures (a job-shop run's ``makespan`` and ``gap``)
sit at the top level of the JSON beside the fixed keys, as before; they are :attr:`RunSummary.figures`
in Python.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: ``metrics.csv``: one row per evaluation; these columns come first, in this order (agent- and
#: provider-specific figures such as ``normalized_score`` or ``reward_model_accuracy`` follow).
METRICS_COLUMNS = [
    "step",
    "true_return",
    "true_return_std",
    "proxy_return",
    "proxy_return_std",
    "success",
    "episode_length",
    "eval_episodes",
    "train_true_return",
    "train_proxy_return",
    "train_episodes",
    "wall_time",
]

#: The order of the keys in ``summary.json``.
_ORDER = (
    "env", "reward", "agent", "seed", "steps", "true_return_mean", "true_return_std", "proxy_return_mean",
    "proxy_return_std", "success_rate", "eval_episodes", "episode_length_mean", "best_eval_true_return",
    "best_eval_step", "wall_time_s", "time_s", "train_steps_per_s", "videos", "artifacts", "agent_info", "resumes",
    "device", "command", "git_commit", "versions", "dataset", "normalized_score", "best_eval_normalized_score",
)  # fmt: skip
#: Keys written only when they have a value (offline data with reference scores).
_OPTIONAL = ("normalized_score", "best_eval_normalized_score")


@dataclass
class RunSummary:
    """What one completed run reports (``summary.json``).

    The runner fills every field; readers need only the identity of the run and its final returns.

    Attributes:
        env, reward, agent: The config names (``env=``, ``reward=``, ``agent=``).
        seed: The run's seed.
        steps: Budget consumed (env steps online, gradient steps offline).
        true_return_mean, true_return_std: Final evaluation on the env's own reward, over episodes.
        proxy_return_mean, proxy_return_std: The provider's return on the same episodes.
        success_rate: Fraction of successful episodes; ``None`` where the env defines no success.
        eval_episodes: Episodes of the final evaluation.
        episode_length_mean: Mean episode length (steps).
        best_eval_true_return, best_eval_step: The best periodic evaluation (optimistic: chosen on
            the evaluation episodes themselves) and its step.
        wall_time_s: Seconds the run took, resumes included.
        time_s: Seconds by phase: ``setup``, ``train``, ``eval``, ``checkpoint``, ``video``.
        train_steps_per_s: Budget units per second of training time.
        videos, artifacts: Files written (relative to the run directory).
        agent_info: What the agent reports about itself (:meth:`agents.base.Agent.describe`).
        resumes: How often the run was resumed.
        device: Where it ran.
        command: The command that reproduces it.
        git_commit: The repository's commit, where known.
        versions: Versions of the main packages in the interpreter that ran it
            (:data:`experiments.rundir.PACKAGES`; ``-`` where one is missing).
        dataset: The offline dataset's id, ``None`` for online runs.
        normalized_score, best_eval_normalized_score: D4RL's normalised score (final and best
            evaluation), for data with reference scores; otherwise ``None`` and left out of the JSON.
        figures: Env-specific figures averaged over the final evaluation (e.g. ``makespan``).
    """

    env: str
    reward: str
    agent: str
    seed: int
    steps: int
    true_return_mean: float
    proxy_return_mean: float
    true_return_std: float | None = None
    proxy_return_std: float | None = None
    success_rate: float | None = None
    eval_episodes: int | None = None
    episode_length_mean: float | None = None
    best_eval_true_return: float | None = None
    best_eval_step: int | None = None
    wall_time_s: float | None = None
    time_s: dict[str, float] = field(default_factory=dict)
    train_steps_per_s: float | None = None
    videos: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    agent_info: dict[str, Any] = field(default_factory=dict)
    resumes: int = 0
    device: str | None = None
    command: str | None = None
    git_commit: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    dataset: str | None = None
    normalized_score: float | None = None
    best_eval_normalized_score: float | None = None
    figures: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON object: the fields in order, optional ones only when set, figures at the top level."""
        out = {name: getattr(self, name) for name in _ORDER}
        for key in _OPTIONAL:
            if out[key] is None:
                del out[key]
        out.update({k: v for k, v in self.figures.items() if k not in out})
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> RunSummary:
        """Read a ``summary.json`` object back (unknown keys become :attr:`figures`).

        Raises:
            ValueError: A required key is missing.
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"figures"}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(obj))
        if missing:
            raise ValueError(f"summary.json lacks {', '.join(missing)}")
        known = {k: v for k, v in obj.items() if k in names}
        return cls(**known, figures={k: v for k, v in obj.items() if k not in names})

    @classmethod
    def load(cls, path: Path) -> RunSummary:
        """Read a run's ``summary.json`` (a file, or the run directory holding it)."""
        path = Path(path)
        file = path / "summary.json" if path.is_dir() else path
        return cls.from_json(json.loads(file.read_text()))
