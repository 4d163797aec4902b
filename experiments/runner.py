"""The runner behind ``experiments/run.py``: env x reward x agent -> a run directory.

Read top to bottom: :func:`run` decides where the run lives (a new Hydra directory, or the one
given to ``resume=``), :class:`Runner` builds the components from the config, trains through the
agent's ``train(steps, callback)``, evaluates on the true reward, checkpoints, records videos and
writes ``summary.json`` last. Nothing here depends on which env, reward or agent is configured:
components are built from their ``_target_`` and env-derived arguments (the env, its seed, the
device) are passed in.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from agents.base import Agent, HasReferenceScores, Relabels, ReportsEvaluation
from envs.errors import ConfigError
from envs.make import env_seeds, make_env, seed_vec_env
from experiments.builders import (
    agent_requirements,
    build_agent,
    build_dataset,
    build_envs,
    build_reward,
    check_agent,
    env_card,
)
from experiments.cli import CONF_DIR, config_dict, resolve_device, user_errors, validate
from experiments.evaluation import default_eval_every, evaluate, record_video, summarize
from experiments.rundir import (
    CsvLog,
    Scalars,
    latest_checkpoint,
    load_checkpoint_state,
    package_versions,
    save_checkpoint,
    set_rng_state,
    write_json_atomic,
)
from experiments.schema import METRICS_COLUMNS, RunSummary
from rewards.base import LearnedReward
from rewards.env import check_imagined_config
from rewards.wrapper import EpisodeStats, RewardVecEnv

log = logging.getLogger("rewardlab")

RESUME_MAY_CHANGE = ("resume", "steps", "device", "progress", "torch_threads")
_CORE_STATS = {
    "true_return",
    "true_return_std",
    "proxy_return",
    "proxy_return_std",
    "success",
    "episode_length",
    "episodes",
}


def video_seed(seed: int, index: int) -> int:
    """The reset seed of ``videos/final_ep<index>.mp4`` (and of rollout.py's episode ``index``) of run ``seed``."""
    return env_seeds(seed, index + 1, "video")[index]


def normalized_score(agent: Agent, true_return: float | None) -> float | None:
    """D4RL's normalised score, ``100 (R - random) / (expert - random)``, for agents whose data defines both references."""
    lo, hi = agent.reference_scores() if isinstance(agent, HasReferenceScores) else (None, None)
    if true_return is None or lo is None or hi is None or hi == lo:
        return None
    return 100.0 * (true_return - lo) / (hi - lo)


# --- the run -----------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed the global RNGs (the runner is the only place that does)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class RunState:
    """What the runner must remember across a resume (stored in each checkpoint's state.json)."""

    step: int = 0
    wall_time: float = 0.0
    next_eval: int = 0
    next_checkpoint: int = 0
    next_video: int | None = None
    best_true_return: float | None = None
    best_step: int | None = None
    time_setup: float = 0.0
    time_eval: float = 0.0
    time_checkpoint: float = 0.0
    time_video: float = 0.0
    resumes: int = 0
    videos: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)


class _Callback:
    """The agent's :class:`agents.base.TrainCallback`: progress, evaluation, checkpoints, stop."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def on_step(self, num_steps: int) -> bool:
        r = self.runner
        r.state.step = num_steps
        if r.learner is not None and r.learner.version != r.relabelled_version:  # stored rewards are stale
            if isinstance(r.agent, Relabels):
                r.agent.relabel(r.learner)
            r.relabelled_version = r.learner.version
        if r.pbar is not None:
            r.pbar.update(num_steps - r.pbar.n)
        if r.train_env is not None:
            r.train_episodes.extend(r.train_env.pop_episodes())
        if num_steps < r.cfg.steps and r.agent.learns:  # the final evaluation and checkpoint follow training
            if num_steps >= r.state.next_eval:
                r.evaluate(num_steps, r.cfg.eval.episodes)
            if num_steps >= r.state.next_checkpoint:
                r.checkpoint(num_steps)
            if r.state.next_video is not None and num_steps >= r.state.next_video:
                r.video(num_steps, f"step_{num_steps:09d}_ep0.mp4", 0)
        return r.interrupted is None

    def on_log(self, num_steps: int, values: Mapping[str, float]) -> None:
        row = {"step": num_steps, **values}
        self.runner.train_log.write(row)
        self.runner.scalars.write("train", row)


class _TqdmHandler(logging.Handler):
    """Console log lines that do not break a progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        if getattr(record, "file_only", False):
            return
        tqdm.write(self.format(record), file=sys.stderr)


class _SetupRecords(logging.Handler):
    """What the ``rewardlab`` logger says while the run is set up, before ``run.log`` exists.

    E.g. a provider's warning while it learns from an agent's data: :meth:`Runner._open_outputs` writes
    these records to ``run.log``. They reach the console as they happen, through the logger's propagation.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Runner:
    """One training run in ``run_dir`` (see the module docstring).

    Args:
        cfg: The composed (or, on resume, the saved) config.
        run_dir: The run directory.
        overrides: The command-line overrides of this launch.
        resuming: Continue from the run's latest checkpoint.
    """

    def __init__(self, cfg: DictConfig, run_dir: Path, overrides: list[str], resuming: bool) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.overrides = overrides
        self.resuming = resuming
        self.t0 = time.time()
        self.interrupted: str | None = None
        self.pbar: Any = None
        self.train_episodes: list[EpisodeStats] = []
        for h in [h for h in log.handlers if isinstance(h, _SetupRecords)]:  # a runner that never opened its log
            log.removeHandler(h)
        self._setup_records = _SetupRecords()
        log.addHandler(self._setup_records)
        log.setLevel(logging.INFO)

        torch.set_num_threads(int(cfg.torch_threads))
        self.device = resolve_device(cfg.device)
        seed_everything(int(cfg.seed))
        self.env_cfg = config_dict(cfg.env)
        if agent_requirements(cfg.agent).imagined_rewards:  # before a provider is built (a CLIP model loaded)
            check_imagined_config(config_dict(cfg.reward), f"agent={cfg.agent.get('name', '?')}")
        self.provider = build_reward(cfg.reward)
        probe = make_env(self.env_cfg)  # what the provider needs from the env, checked before the run directory
        try:
            self.provider.check_env(probe)
        except ConfigError:
            self.provider.close()
            raise
        finally:
            probe.close()
        self.learner = self.provider if isinstance(self.provider, LearnedReward) else None
        n_envs = int(cfg.agent.get("n_envs", 1))
        self.n_envs = n_envs
        self.train_env: RewardVecEnv | None = build_envs(
            self.env_cfg, n_envs, int(cfg.seed), self.provider, observe=True
        )
        n_eval = min(int(cfg.eval.n_envs), int(cfg.eval.episodes))
        self.eval_env = build_envs(self.env_cfg, n_eval, int(cfg.seed), self.provider, stream="eval")
        card = env_card(self.env_cfg)
        dataset_cfg = cfg.get("dataset")
        check_agent(
            cfg.agent,
            self.train_env.action_space,
            card,
            dataset_cfg is not None,
            cfg.get("dataset_root"),
            reward=self.provider,
        )
        try:
            check_agent(cfg.agent, self.train_env.action_space, card, dataset_cfg is not None, None, int(cfg.steps))
        except ConfigError as exc:
            if cfg.get("require_update", True):
                raise
            log.warning("%s (require_update=false: running anyway)", exc)
        self.data = None
        if dataset_cfg is not None:
            self.data = build_dataset(dataset_cfg, self.provider)
        self.agent = build_agent(
            cfg.agent, self.train_env, self.provider, int(cfg.seed), self.device, card=card, dataset=self.data
        )
        # SB3 reseeds its env with seed + i when the algorithm is built: the run's own streams win
        seed_vec_env(self.train_env, env_seeds(int(cfg.seed), n_envs, "train"))

        if self.learner is not None:
            self.learner.attach(run_dir)
        self.relabelled_version = self.learner.version if self.learner is not None else 0
        self.eval_every = int(cfg.eval.every or default_eval_every(int(cfg.steps)))
        self.checkpoint_every = int(cfg.checkpoint.every or self.eval_every)
        self.state = RunState()
        self._setup_time = time.time() - self.t0

    # --- lifecycle ---------------------------------------------------------------------------

    def run(self) -> float:
        """Train, evaluate, record; returns the final mean true return (for Hydra sweepers)."""
        self._open_outputs()
        previous = self._install_signal_handlers()
        try:
            if self.resuming:
                self._restore()
            else:
                self._start()
            self._open_progress()
            self.agent.train(int(self.cfg.steps), _Callback(self))
            self.state.step = self.agent.num_steps
            if self.interrupted:
                self.checkpoint(self.state.step)
                code = 130 if self.interrupted == "SIGINT" else 143
                log.error(
                    "interrupted by %s at step %d; checkpoint saved. Continue with: python experiments/run.py resume=%s",
                    self.interrupted,
                    self.state.step,
                    shlex.quote(str(self.run_dir)),
                )
                raise SystemExit(code)
            return self._finish()
        except ConfigError as exc:
            log.error("stopped at step %d: %s", self.state.step, exc, extra={"file_only": True})
            raise
        except Exception:
            log.exception("run failed at step %d", self.state.step, extra={"file_only": True})
            log.error(
                "run failed at step %d: the last checkpoint is kept, no summary.json is written; traceback below and in %s",
                self.state.step,
                self.run_dir / "run.log",
            )
            raise
        finally:
            self._restore_signal_handlers(previous)
            self._close()

    def _open_outputs(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._lock = _lock_run_dir(self.run_dir)
        handler = logging.FileHandler(self.run_dir / "run.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        console = _TqdmHandler()
        console.setFormatter(logging.Formatter("[rewardlab] %(message)s"))
        log.removeHandler(self._setup_records)
        for record in self._setup_records.records:  # already on the console
            handler.handle(record)
        self._log_handlers = [handler, console]
        for h in self._log_handlers:
            log.addHandler(h)
        log.setLevel(logging.INFO)
        log.propagate = False
        self.metrics_log = CsvLog(self.run_dir / "metrics.csv", METRICS_COLUMNS)
        self.train_log = CsvLog(self.run_dir / "train.csv")
        self.train_log.touch()  # agents that have not updated yet (e.g. SAC warm-up) log nothing

    def _start(self) -> None:
        (self.run_dir / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg, resolve=True))
        (self.run_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(self.overrides)))
        for rel, text in self.provider.files().items():  # e.g. the reward program, with its provenance
            (self.run_dir / rel).write_text(text)
        self.scalars = Scalars(self.run_dir / "tensorboard")
        log.info(
            "run %s: env=%s reward=%s agent=%s seed=%s %s device=%s",
            self.run_dir,
            self.cfg.env.name,
            self.cfg.reward.name,
            self.cfg.agent.name,
            self.cfg.seed,
            self._budget_text(),
            self.device,
        )
        self.state.time_setup = self._setup_time
        self.state.next_eval = 0
        self.state.next_checkpoint = 0
        self.state.next_video = int(self.cfg.video.every) if self.cfg.video.every else None
        if self.agent.learns:  # a solver's only evaluation is the final one
            self.evaluate(0, int(self.cfg.eval.episodes))
            self.checkpoint(0)

    def _budget_text(self) -> str:
        """``steps=N`` for the header, saying where the run ends when ``n_envs`` stepping together overshoot ``N``."""
        if not self.agent.learns:
            return "(no training: steps= does not apply)"
        steps = int(self.cfg.steps)
        if self.cfg.get("dataset") is None and self.n_envs > 1 and steps % self.n_envs:
            end = -(-steps // self.n_envs) * self.n_envs
            return f"steps={steps} (ends at step {end}: its {self.n_envs} envs step together)"
        return f"steps={steps}"

    def _restore(self) -> None:
        checkpoint = latest_checkpoint(self.run_dir)
        assert checkpoint is not None  # checked by _resume_config
        state, rng = load_checkpoint_state(checkpoint)
        self.state = RunState(**state)
        self.state.resumes += 1
        self.state.time_setup += self._setup_time
        self.agent.load(checkpoint / "agent")
        if self.learner is not None and (checkpoint / "reward").is_dir():
            self.learner.load(checkpoint / "reward")
            self.relabelled_version = self.learner.version
        set_rng_state(rng)
        if self.train_env is not None:
            # New episodes after a resume: a new generation of the run's training seeds.
            seed_vec_env(
                self.train_env, env_seeds(int(self.cfg.seed), self.train_env.num_envs, "train", self.state.resumes)
            )
        self.metrics_log.truncate_after(self.state.step)
        self.train_log.truncate_after(self.state.step)
        self.scalars = Scalars(self.run_dir / "tensorboard", purge_step=self.state.step + 1)
        (self.run_dir / "summary.json").unlink(missing_ok=True)
        log.info("resumed %s from %s (step %d of %d)", self.run_dir, checkpoint.name, self.state.step, self.cfg.steps)

    def _open_progress(self) -> None:
        if not self.agent.learns:
            return  # nothing to count: a solver's work is one call
        show = self.cfg.progress
        if show == "auto":
            show = sys.stderr.isatty()
        if show:
            from tqdm import tqdm

            self.pbar = tqdm(
                total=int(self.cfg.steps),
                initial=self.state.step,
                unit="step",
                dynamic_ncols=True,
                mininterval=0.5,
                file=sys.stderr,
                desc=f"[rewardlab] {self.cfg.env.name}/{self.cfg.reward.name}/{self.cfg.agent.name}",
            )

    def _finish(self) -> float:
        step = self.state.step
        stats = self.evaluate(step, int(self.cfg.eval.final_episodes))
        if isinstance(self.agent, ReportsEvaluation):  # e.g. a text agent's diversity, KL and samples.md
            figures, files = self.agent.evaluation_report(stats)
            stats.update(figures)
            stats["artifacts"].update(files)
        self.checkpoint(step)
        self._write_artifacts(stats.pop("artifacts"))
        for k in range(int(self.cfg.video.final_episodes)):
            self.video(step, f"final_ep{k}.mp4", k)
        summary = self._summary(stats).to_json()
        write_json_atomic(self.run_dir / "summary.json", summary)
        extra = "".join(f", {k} {v:.4g}" for k, v in stats.items() if k not in _CORE_STATS and isinstance(v, float))
        same = summary["eval_episodes"] > 1 and summary["true_return_std"] == 0 and summary["proxy_return_std"] == 0
        log.info(
            "done: true return %.2f ± %.2f, proxy return %.2f%s%s over %d episodes%s; %s",
            summary["true_return_mean"],
            summary["true_return_std"],
            summary["proxy_return_mean"],
            "" if summary["success_rate"] is None else f", success {summary['success_rate']:.2f}",
            extra,
            summary["eval_episodes"],
            " (every one with the same returns)" if same else "",
            self.run_dir,
        )
        return float(summary["true_return_mean"])

    def _close(self) -> None:
        if self.pbar is not None:
            self.pbar.close()
        for closable in (self.eval_env, self.agent, getattr(self, "scalars", None)):
            if closable is not None:
                try:
                    closable.close()
                except Exception:  # closing must not hide the real error
                    log.debug("close failed", exc_info=True)
        for h in [*getattr(self, "_log_handlers", []), self._setup_records]:
            log.removeHandler(h)
            h.close()

    # --- signals -----------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous: dict[int, Any] = {}

        def handler(signum: int, _frame: Any) -> None:
            if self.interrupted:  # second signal: stop now
                raise KeyboardInterrupt
            self.interrupted = signal.Signals(signum).name
            log.warning("%s received: saving a checkpoint and stopping (send again to stop at once)", self.interrupted)

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, Any]) -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    # --- evaluation, checkpoints, videos -----------------------------------------------------

    def wall_time(self) -> float:
        """Wall-clock seconds the run has spent so far, earlier sessions of a resumed run included."""
        return self.state.wall_time + (time.time() - self.t0)

    def evaluate(self, step: int, episodes: int) -> dict[str, Any]:
        """Evaluate on the true reward, log a metrics row, schedule the next evaluation."""
        t = time.time()
        episodes_out = evaluate(
            self.agent,
            self.eval_env,
            episodes,
            int(self.cfg.seed),
            bool(self.cfg.eval.deterministic),
        )
        stats = summarize(episodes_out)
        train = self.train_episodes
        self.train_episodes = []
        row = {
            "step": step,
            **{k: v for k, v in stats.items() if k not in ("episodes", "artifacts", "components")},
            "eval_episodes": stats["episodes"],
            "train_true_return": float(np.mean([e.true_return for e in train])) if train else None,
            "train_proxy_return": float(np.mean([e.proxy_return for e in train])) if train else None,
            "train_episodes": len(train),
            "wall_time": round(self.wall_time(), 3),
        }
        score = normalized_score(self.agent, stats["true_return"])
        if score is not None:
            row["normalized_score"] = score
        if self.learner is not None:
            row.update(self.learner.metrics())
        row.update({f"component/{k}": v for k, v in stats["components"].items()})
        if train:
            row.update({f"train_component/{k}": v for k, v in summarize(train)["components"].items()})
        self.metrics_log.write(row)
        self.scalars.write("metrics", row)
        self._plot()
        if self.state.best_true_return is None or stats["true_return"] > self.state.best_true_return:
            self.state.best_true_return, self.state.best_step = stats["true_return"], step
        while self.state.next_eval <= step:
            self.state.next_eval += self.eval_every
        self.state.time_eval += time.time() - t
        success = "" if stats["success"] is None else f" | success {stats['success']:.2f}"
        where = f"step {step}/{self.cfg.steps}" if self.agent.learns else "evaluation"
        message = (
            f"{where} | true return {stats['true_return']:.2f} ± {stats['true_return_std']:.2f} "
            f"| proxy return {stats['proxy_return']:.2f}{success} | {self.wall_time():.0f}s"
        )
        if self.pbar is not None:
            self.pbar.set_postfix_str(
                f"true {stats['true_return']:.1f} proxy {stats['proxy_return']:.1f}", refresh=False
            )
        log.info(message)
        return stats

    def _plot(self) -> None:
        """Redraw ``curves.png`` from ``metrics.csv`` (a picture of the run so far; never stops the run)."""
        from experiments.plots import plot_curves

        cfg = self.cfg
        title = f"{cfg.env.name} / {cfg.reward.name} / {cfg.agent.name}, seed {cfg.seed}"
        try:
            plot_curves(self.run_dir / "metrics.csv", self.run_dir / "curves.png", title)
        except Exception:  # a plotting problem must not lose a run
            log.warning("curves.png could not be drawn", exc_info=True)

    def _write_artifacts(self, artifacts: Mapping[str, Any]) -> None:
        """Files of the final evaluation: the env's (``schedules/<instance>.json``; ``samples.jsonl``: a record per episode) and the agent's report's (text)."""
        for rel, obj in artifacts.items():
            path = (self.run_dir / rel).resolve()
            if self.run_dir.resolve() not in path.parents:
                raise ValueError(f"env artifact path {rel!r} leaves the run directory")
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(obj, str):  # a text file (an agent's report)
                write_text_atomic(path, obj)
            elif rel.endswith(".jsonl"):  # one JSON record per episode
                write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in obj))
            else:
                write_json_atomic(path, obj)
            self.state.artifacts.append(rel)

    def checkpoint(self, step: int) -> None:
        """Save agent + runner state + RNGs; schedule the next checkpoint."""
        t = time.time()
        while self.state.next_checkpoint <= step:
            self.state.next_checkpoint += self.checkpoint_every
        self.state.step = step
        self.state.wall_time = self.wall_time()
        self.t0 = time.time()
        save_checkpoint(
            self.run_dir,
            step,
            self.agent,
            asdict(self.state),
            keep=int(self.cfg.checkpoint.keep),
            provider=self.learner,
        )
        self.state.time_checkpoint += time.time() - t

    def video(self, step: int, name: str, index: int) -> None:
        """Record one episode of the current policy to ``videos/<name>``."""
        t = time.time()
        info = record_video(
            self.agent,
            self.env_cfg,
            self.run_dir / "videos" / name,
            seed=video_seed(int(self.cfg.seed), index),
            max_frames=int(self.cfg.video.max_frames),
            fps=self.cfg.video.fps,
            deterministic=bool(self.cfg.eval.deterministic),
            provider=self.provider,
            min_seconds=float(self.cfg.video.get("min_seconds", 0.0)),
            overlay=bool(self.cfg.video.get("overlay", True)),
        )
        rel = str(Path(info["path"]).relative_to(self.run_dir))
        if rel not in self.state.videos:
            self.state.videos.append(rel)
        if self.state.next_video is not None:
            while self.state.next_video <= step:
                self.state.next_video += int(self.cfg.video.every)
        self.state.time_video += time.time() - t
        log.info(
            "video %s: %d frames, true return %.2f, proxy return %.2f",
            rel,
            info["frames"],
            info["true_return"],
            info["proxy_return"],
        )

    def _summary(self, stats: Mapping[str, Any]) -> RunSummary:
        wall = self.wall_time()
        s = self.state
        train_time = max(wall - s.time_setup - s.time_eval - s.time_checkpoint - s.time_video, 1e-9)
        return RunSummary(
            env=self.cfg.env.name,
            reward=self.cfg.reward.name,
            agent=self.cfg.agent.name,
            seed=int(self.cfg.seed),
            steps=int(s.step),
            true_return_mean=stats["true_return"],
            true_return_std=stats["true_return_std"],
            proxy_return_mean=stats["proxy_return"],
            proxy_return_std=stats["proxy_return_std"],
            success_rate=stats["success"],
            eval_episodes=stats["episodes"],
            episode_length_mean=stats["episode_length"],
            best_eval_true_return=s.best_true_return,
            best_eval_step=s.best_step,
            wall_time_s=round(wall, 3),
            time_s={
                "setup": round(s.time_setup, 3),
                "train": round(train_time, 3),
                "eval": round(s.time_eval, 3),
                "checkpoint": round(s.time_checkpoint, 3),
                "video": round(s.time_video, 3),
            },
            train_steps_per_s=round(s.step / train_time, 1),
            videos=list(s.videos),
            artifacts=sorted(set(s.artifacts)),
            agent_info=self.agent.describe(),
            resumes=s.resumes,
            device=self.device,
            command="python experiments/run.py " + " ".join(shlex.quote(o) for o in self.overrides),
            git_commit=git_commit(),
            versions=package_versions(),
            dataset=self.data.dataset_id if self.data is not None else None,
            normalized_score=normalized_score(self.agent, stats["true_return"]),
            best_eval_normalized_score=normalized_score(self.agent, s.best_true_return),
            figures={k: v for k, v in stats.items() if k not in _CORE_STATS},  # env-specific figures
        )


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def git_commit() -> str | None:
    """The commit of this source tree (``git rev-parse HEAD``), or ``None`` outside a git clone."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


# --- entry point -------------------------------------------------------------------------------


def _lock_run_dir(run_dir: Path) -> Any:
    """Hold an exclusive lock on ``run_dir/.lock`` for the life of the process (one writer per run)."""
    import fcntl

    handle = (run_dir / ".lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise ConfigError(f"{run_dir} is in use by {owner}; wait for it to finish or stop it first") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return handle


def _remove_if_empty(path: Path) -> None:
    """Remove a directory Hydra made for a run that did not start, and its empty parents below cwd."""
    path, cwd = path.resolve(), Path.cwd().resolve()
    while True:
        try:
            path.rmdir()
        except OSError:
            return
        path = path.parent
        if path == cwd or cwd not in path.parents:
            return


_ABSENT = object()  # OmegaConf.select's answer for a key the config does not have (None is a value)


def _plain(node: object) -> object:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, (DictConfig, ListConfig)) else node


def _repeats_saved(override: str, cfg: DictConfig, saved: DictConfig, first: set[str]) -> bool:
    """Whether a command-line ``override`` given with ``resume=`` leaves the saved config as it is.

    One of the run's first command (``first``: its ``overrides.yaml``, ``+`` signs aside); a value
    (``seed=0``, ``eval.every=null``, ``+agent.hyperparams.tau=0.01``) when the saved one is equal (both
    resolved); a group choice (``agent=sac``, ``env=cartpole``) when the saved run made the same choice
    (its node's ``name``; settings the run added on top of it stay as saved). So repeating a run's command
    with ``resume=`` added is accepted. Deletions (``~key``), a ``_global_`` group (``preset=smoke``) that
    the first command did not have, and anything that cannot be compared are not.
    """
    if override.lstrip("+") in first:
        return True
    key, _, choice = override.partition("=")
    if key.startswith("~"):
        return False
    key = key.lstrip("+")
    try:
        mine = OmegaConf.select(cfg, key.replace("/", "."), default=_ABSENT)
        theirs = OmegaConf.select(saved, key.replace("/", "."), default=_ABSENT)
        if mine is _ABSENT or theirs is _ABSENT:  # e.g. preset=smoke (a _global_ group) not in the first command
            return False
        group = (CONF_DIR / key / f"{choice}.yaml").is_file()
        if group and isinstance(mine, DictConfig) and isinstance(theirs, DictConfig) and "name" in mine:
            return "name" in theirs and mine.name == theirs.name
        return _plain(mine) == _plain(theirs)
    except Exception:  # an interpolation that does not resolve outside its run, a missing value: not comparable
        return False


def _resume_config(run_dir: Path, cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The saved config of ``run_dir`` with the few settings a resume may change."""
    if not run_dir.is_dir():
        raise ConfigError(f"resume={run_dir}: no such directory")
    if not (run_dir / "config.yaml").exists():
        raise ConfigError(f"resume={run_dir} is not a rewardlab run directory (it has no config.yaml)")
    checkpoint = latest_checkpoint(run_dir)
    if checkpoint is None:
        raise ConfigError(f"resume={run_dir}: the run has no checkpoint to continue from; start it again")
    saved = OmegaConf.load(run_dir / "config.yaml")
    if not isinstance(saved, DictConfig):
        raise ConfigError(f"resume={run_dir}: its config.yaml is a {type(saved).__name__}, not a run's config")
    try:
        first_command: object = OmegaConf.load(run_dir / "overrides.yaml")
    except (OSError, ValueError):  # a run from before overrides.yaml, or a damaged one: values are compared
        first_command = None
    first = {str(o).lstrip("+") for o in first_command} if isinstance(first_command, ListConfig) else set()
    keys = {o: o.split("=", 1)[0].lstrip("+~") for o in overrides}
    changed = [o for o, k in keys.items() if k not in RESUME_MAY_CHANGE and not _repeats_saved(o, cfg, saved, first)]
    if changed:
        raise ConfigError(
            f"resume continues the saved config of {run_dir}; only {', '.join(k + '=' for k in RESUME_MAY_CHANGE[1:])} "
            f"may be given with it (or a setting equal to the saved one), not {' '.join(changed)}"
        )
    for key in RESUME_MAY_CHANGE[1:]:
        if key in keys.values():
            saved[key] = cfg[key]
    saved.resume = str(run_dir)
    validate(saved)
    checkpoint = latest_checkpoint(run_dir) or checkpoint  # read again: a run still going may have saved a newer one
    done_step = json.loads((checkpoint / "state.json").read_text())["step"]
    if (run_dir / "summary.json").exists() and done_step >= saved.steps:
        raise ConfigError(
            f"{run_dir} is complete at step {done_step}; give steps=N with N > {done_step} to train further"
        )
    return saved


def _refuse_existing_run(run_dir: Path) -> None:
    if (run_dir / "config.yaml").exists() or (run_dir / "metrics.csv").exists():
        raise ConfigError(
            f"{run_dir} already holds a run; choose another hydra.run.dir, or continue it with resume={run_dir}"
        )


def run(cfg: DictConfig) -> float:
    """Hydra task function: validate, pick the run directory, run. Bad input exits with status 2."""
    with user_errors():
        hydra_cfg = HydraConfig.get()
        hydra_dir = Path(hydra_cfg.runtime.output_dir)
        overrides = [o for o in hydra_cfg.overrides.task if not o.startswith("hydra")]
        if cfg.resume:
            run_dir = Path(str(cfg.resume)).expanduser().resolve()
            try:
                moved = [o for o in hydra_cfg.overrides.hydra if o.lstrip("+").startswith("hydra.run.dir=")]
                if moved and hydra_dir.resolve() != run_dir:
                    raise ConfigError(
                        f"resume={run_dir} continues the run in its own directory; {moved[0]} would not be used "
                        "(leave it out)"
                    )
                cfg = _resume_config(run_dir, cfg, overrides)
            finally:
                if hydra_dir.resolve() != run_dir:
                    _remove_if_empty(hydra_dir)
        else:
            run_dir = hydra_dir
            try:
                validate(cfg)
                _refuse_existing_run(run_dir)
            except ConfigError:
                _remove_if_empty(run_dir)
                raise
        try:
            runner = Runner(cfg, run_dir, overrides, resuming=bool(cfg.resume))
        except ConfigError:
            if not cfg.resume:
                _remove_if_empty(run_dir)
            raise
        return runner.run()
