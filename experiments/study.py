#!/usr/bin/env python
"""A reward-design study: a grid of env x reward x agent x seeds run as one Hydra multirun, then its report.

    python experiments/study.py study=<name> [out=DIR] [study.seeds=[0,1]] [study.overrides=[steps=5000]]
                                [hydra/launcher=submitit_slurm hydra.launcher.partition=P ...]
    python experiments/study.py report=<sweep dir>        # rebuild the report only
    python experiments/study.py hydra.searchpath=[file://DIR] study=<name>   # a study in DIR/study/<name>.yaml

A study is ``experiments/conf/study/<name>.yaml``: ``envs``, ``rewards`` and ``agents``, each a list of
config names or a mapping ``variant name -> run.py overrides`` (``negated: [reward=shaped, reward.scale=-1]``),
``seeds``, ``overrides`` for every cell and ``cells`` (``match: {reward: preference}`` plus the
``overrides`` of the matching cells). Each cell (one env, reward and agent variant, one seed) is the run
``python experiments/run.py <its overrides> seed=<s>``.

1. **Checks before anything runs**: every cell's config is composed and validated as ``run.py`` would
   (unknown names, keys, values), its reward provider built and checked against the env, and its agent
   checked against the env's action space and the budget (:func:`experiments.builders.check_agent`);
   every bad cell is listed in one error (exit 2), and no directory is made.
2. **One multirun**: each cell becomes a config of a ``study_cell`` group in ``<out>/.study/`` (its
   group choices as ``override /<group>: <name>`` in its defaults list, its settings as values, its run
   directory ``<out>/<cell>``), and ``run.py -m +study_cell=<cell>,...`` runs them through Hydra's
   launcher: joblib here; any ``hydra/...`` or ``hydra.`` argument is passed through
   (``hydra/launcher=submitit_slurm`` submits a SLURM job array). ``<out>/study.json`` records the
   cells with the equivalent ``run.py`` commands, the package versions and the git commit.
3. **Re-running** the same study skips finished cells (``summary.json``), continues unfinished ones
   from their last checkpoint (a second multirun of ``run.py resume=<run dir>``, :mod:`experiments.runner`),
   and starts again those that stopped before their first checkpoint (their directory moved to
   ``<out>/.stale/``).
4. **The report** (:mod:`experiments.report`): ``<out>/report.md`` and ``<out>/report.html``.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from envs.errors import ConfigError
from experiments.cli import CONF_DIR, compose_script, config_dict, group_choices, is_group, search_dirs, user_errors

REPO = Path(__file__).resolve().parents[1]
GROUP = "study_cell"
#: the keys a study config may have (a misspelled one would silently change what runs)
STUDY_KEYS = frozenset({"name", "envs", "rewards", "agents", "seeds", "overrides", "cells"})


@dataclass
class Cell:
    """One run of the grid: its folder name, names, seed and ``run.py`` overrides (seed included)."""

    name: str
    env: str
    reward: str
    agent: str
    seed: int
    overrides: list[str]
    config_dirs: list[Path] = field(default_factory=list)

    @property
    def searchpath(self) -> list[str]:
        """``hydra.searchpath=[file://DIR,...]`` of the extra config directories (none: ``[]``)."""
        return [f"hydra.searchpath=[{','.join(f'file://{d}' for d in self.config_dirs)}]"] if self.config_dirs else []

    @property
    def command(self) -> str:
        """The equivalent ``python experiments/run.py ...`` command line."""
        return "python experiments/run.py " + " ".join(shlex.quote(o) for o in [*self.searchpath, *self.overrides])


def _axis(value: Any, group: str) -> dict[str, list[str]]:
    """``[a, b]`` -> ``{a: [group=a], b: [group=b]}``; a mapping of variant -> overrides as it is."""
    if isinstance(value, Mapping):
        return {str(k): [str(o) for o in (v or [])] or [f"{group}={k}"] for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str) and value:
        return {str(v): [f"{group}={v}"] for v in value}
    raise ConfigError(
        f"study.{group}s must be a non-empty list of names or a mapping of variant -> overrides, not {value!r}"
    )


def expand(study: Mapping[str, Any], config_dirs: Sequence[Path] = ()) -> list[Cell]:
    """The cells of a study config (module docstring), in grid order: env, reward, agent, seed.

    Args:
        study: The study node (``envs``, ``rewards``, ``agents``, ``seeds``, ``overrides``, ``cells``).
        config_dirs: Config directories besides ``experiments/conf`` (the command line's ``hydra.searchpath``).
    """
    unknown = sorted(set(study) - STUDY_KEYS)
    if unknown:
        raise ConfigError(f"unknown study key(s) {unknown}; accepted: {', '.join(sorted(STUDY_KEYS))}")
    for i, c in enumerate(study.get("cells") or []):
        extra = sorted(set(c) - {"match", "overrides"}) if isinstance(c, Mapping) else ["(not a mapping)"]
        if extra:
            raise ConfigError(f"study.cells[{i}]: unknown key(s) {extra}; accepted: match, overrides")
    for key in ("envs", "rewards", "agents", "seeds"):
        if key not in study:
            raise ConfigError(
                f"the study has no {key}: give envs, rewards, agents and seeds (see experiments/conf/study/)"
            )
    seeds = study["seeds"]
    if (
        not isinstance(seeds, Sequence)
        or isinstance(seeds, str)
        or not seeds
        or not all(isinstance(s, int) and s >= 0 for s in seeds)
    ):
        raise ConfigError(f"study.seeds={seeds!r} must be a non-empty list of integers >= 0")
    common = [str(o) for o in study.get("overrides") or []]
    cells = []
    for env, env_o in _axis(study["envs"], "env").items():
        for reward, reward_o in _axis(study["rewards"], "reward").items():
            for agent, agent_o in _axis(study["agents"], "agent").items():
                names = {"env": env, "reward": reward, "agent": agent}
                extra = [str(o) for c in study.get("cells") or []
                         if all(names.get(k) == str(v) for k, v in (c.get("match") or {}).items())
                         for o in c.get("overrides") or []]  # fmt: skip
                for seed in seeds:
                    overrides = [*env_o, *reward_o, *agent_o, *common, *extra, f"seed={seed}"]
                    cells.append(
                        Cell(
                            f"{env}_{reward}_{agent}_s{seed}",
                            env,
                            reward,
                            agent,
                            int(seed),
                            overrides,
                            list(config_dirs),
                        )
                    )
    return cells


def check_cell(cell: Cell) -> None:
    """Everything ``run.py`` would refuse about a cell, before anything runs (module docstring, step 1).

    Raises:
        ConfigError: The first problem of this cell.
    """
    from envs.make import make_env
    from experiments.builders import build_reward, check_agent, env_card
    from experiments.cli import check_composes, check_group_choices, validate

    cell_config(cell, Path("."))  # overrides a study cannot hold
    check_group_choices([*cell.searchpath, *cell.overrides])
    cfg = check_composes([*cell.searchpath, *cell.overrides])
    validate(cfg)
    env_cfg = config_dict(cfg.env)
    probe = make_env(env_cfg)
    try:
        provider = build_reward(cfg.reward)
        try:
            provider.check_env(probe)
            steps = int(cfg.steps) if cfg.get("require_update", True) else None
            check_agent(
                cfg.agent,
                probe.action_space,
                env_card(env_cfg),
                cfg.get("dataset") is not None,
                cfg.get("dataset_root"),
                steps,
                reward=provider,
            )
        finally:
            provider.close()
    finally:
        probe.close()


def check_cells(cells: Sequence[Cell]) -> None:
    """Check each env x reward x agent variant once (seeds share a config); list every bad one in one error.

    Raises:
        ConfigError: ``N bad cell(s): <cell>: <why>; ...``.
    """
    bad, seen = [], set()
    for cell in cells:
        key = (cell.env, cell.reward, cell.agent)
        if key in seen:
            continue
        seen.add(key)
        try:
            check_cell(cell)
        except ConfigError as exc:
            bad.append(f"{cell.env} x {cell.reward} x {cell.agent}: {' '.join(str(exc).split())}")
    if bad:
        raise ConfigError(f"{len(bad)} bad cell(s), nothing was run: " + "; ".join(bad))


def cell_config(cell: Cell, sweep: Path) -> str:
    """The ``study_cell`` config of a cell: group choices in its defaults list, settings as values (YAML text)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    defaults: dict[str, str] = {}
    values = OmegaConf.create({})
    for override in OverridesParser.create().parse_overrides(list(cell.overrides)):
        key = override.key_or_group
        if override.is_delete() or override.is_sweep_override() or override.package is not None:
            raise ConfigError(
                f"cell {cell.name}: {override.input_line} is not supported in a study (a plain key=value or group=name)"
            )
        if is_group(key.replace(".", "/"), [CONF_DIR, *cell.config_dirs]):
            defaults[key.replace(".", "/")] = str(override.value())
        else:
            OmegaConf.update(values, key, override.value(), force_add=True)
    node: dict[str, Any] = {"defaults": [{f"override /{g}": v} for g, v in defaults.items()]}
    node.update(OmegaConf.to_container(values) or {})  # type: ignore[arg-type]
    node["hydra"] = {"sweep": {"dir": str(sweep), "subdir": cell.name}}
    return (
        "# @package _global_\n# written by experiments/study.py: "
        + cell.command
        + "\n"
        + OmegaConf.to_yaml(OmegaConf.create(node))
    )


def _in_use(run_dir: Path) -> bool:
    """Whether a live process holds the run's lock (:func:`experiments.runner._lock_run_dir`)."""
    import fcntl

    if not (run_dir / ".lock").exists():
        return False
    with (run_dir / ".lock").open("a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False


def _state(run_dir: Path) -> str:
    from experiments.rundir import latest_checkpoint

    if (run_dir / "summary.json").exists():
        return "done"
    if _in_use(run_dir):
        raise ConfigError(
            f"{run_dir} is running now (another study.py or run.py holds it); wait for it or stop it first"
        )
    if latest_checkpoint(run_dir) is not None:
        return "resume"
    return "stale" if run_dir.exists() and any(run_dir.iterdir()) else "new"


def _check_unchanged(cells: Sequence[Cell], states: Mapping[str, str], sweep: Path) -> None:
    """Refuse to skip or resume runs that the study's previous launch (``study.json``) made with other settings.

    Raises:
        ConfigError: Some existing runs' recorded commands differ from their cells' commands now (listed).
    """
    import json

    try:
        before = {c["name"]: c["command"] for c in json.loads((sweep / "study.json").read_text())["cells"]}
    except (OSError, ValueError, KeyError, TypeError):
        return  # a first launch (or a directory without a readable study.json): nothing to compare
    changed = [c for c in cells if states[c.name] in ("done", "resume") and before.get(c.name, c.command) != c.command]
    if changed:
        lines = "; ".join(f"{c.name}: was `{before[c.name]}`, now `{c.command}`" for c in changed[:5])
        more = f" (and {len(changed) - 5} more)" if len(changed) > 5 else ""
        raise ConfigError(
            f"{len(changed)} run(s) in {sweep} were made with other settings than the study now gives them, so they "
            f"would be skipped or resumed as if unchanged: {lines}{more}; give another out= or delete those run directories"
        )


def _multirun(args: list[str], passthrough: Sequence[str]) -> int:
    cmd = [sys.executable, str(REPO / "experiments" / "run.py"), "-m", *args, *passthrough]
    print("[study] " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    return subprocess.run(cmd, check=False).returncode  # from the caller's directory, as a run.py command would be


def launch(cells: Sequence[Cell], sweep: Path, passthrough: Sequence[str], meta: Mapping[str, Any]) -> int:
    """Run the cells that are not finished (module docstring, steps 2 and 3); the launcher's exit status (0: all ran)."""
    from experiments.rundir import package_versions, write_json_atomic
    from experiments.runner import git_commit  # the commit every run records (summary.json), one definition

    states = {c.name: _state(sweep / c.name) for c in cells}
    _check_unchanged(cells, states, sweep)
    group_dir = sweep / ".study" / GROUP
    group_dir.mkdir(parents=True, exist_ok=True)
    for cell in cells:
        (group_dir / f"{cell.name}.yaml").write_text(cell_config(cell, sweep))
    write_json_atomic(sweep / "study.json", {**meta, "versions": package_versions(), "git_commit": git_commit(),
                                             "cells": [{"name": c.name, "variants": {"env": c.env, "reward": c.reward, "agent": c.agent},
                                                        "command": c.command, "state_at_launch": states[c.name]} for c in cells]})  # fmt: skip
    for name in (n for n, s in states.items() if s == "stale"):  # stopped before its first checkpoint: start again
        (sweep / ".stale").mkdir(exist_ok=True)
        shutil.move(str(sweep / name), str(sweep / ".stale" / f"{name}_{time.strftime('%Y%m%d-%H%M%S')}"))
    counts = {s: sum(v == s for v in states.values()) for s in ("done", "resume", "stale", "new")}
    print(f"[study] {len(cells)} cells: {counts['done']} finished (skipped), {counts['resume']} to resume, "
          f"{counts['new'] + counts['stale']} to run", flush=True)  # fmt: skip
    rc = 0
    resume = [str(sweep / n) for n, s in states.items() if s == "resume"]
    if resume:
        rc |= _multirun([f"resume={','.join(resume)}", f"hydra.sweep.dir={sweep / '.study' / 'resume'}"], passthrough)
    fresh = [n for n, s in states.items() if s in ("new", "stale")]
    if fresh:
        study_dir = sweep / ".study"  # the sweep dir also on the command line: the launcher's (submitit's logs) too
        path = ",".join(f"file://{d}" for d in [study_dir, *cells[0].config_dirs])
        rc |= _multirun(
            [f"hydra.searchpath=[{path}]", f"+{GROUP}={','.join(fresh)}", f"hydra.sweep.dir={sweep}"], passthrough
        )
    return rc


def _report_args(cfg: Any) -> dict[str, Any]:
    """``reps=`` and ``distance_samples=`` of ``conf/run_study.yaml`` as :func:`experiments.report.build`'s arguments.

    Raises:
        ConfigError: ``reps`` below 1, ``distance_samples`` below 0 or 1 (or not integers).
    """
    from experiments.cli import check_int

    check_int(cfg, "reps", 1)
    check_int(cfg, "distance_samples", 0)
    samples = int(cfg.distance_samples)
    if samples == 1:
        raise ConfigError("distance_samples=1: give 0 (no reward distances) or at least 2 transitions per provider")
    return {"reps": int(cfg.reps), "with_distances": samples > 0, "distance_samples": samples}


def main(argv: Sequence[str]) -> int:
    """Run a study and write its report, or rebuild a report (module docstring).

    Args:
        argv: ``study=<name>`` or ``report=<sweep dir>``, ``key=value`` overrides of ``conf/run_study.yaml``,
            and ``hydra/...`` / ``hydra.`` arguments for the launcher (passed through).

    Returns:
        0, or the launcher's non-zero exit status when a run failed (the report covers the finished ones).

    Raises:
        ConfigError: Bad input (no study, unknown names, bad cells, an empty sweep directory).
    """
    passthrough = [
        a for a in argv if a.lstrip("+~").startswith(("hydra/", "hydra.")) and not a.startswith("hydra.searchpath=")
    ]
    if any(a.startswith(("hydra.sweep.", "hydra.run.")) for a in passthrough):
        raise ConfigError(
            "a study's runs live in out=DIR (one folder per cell); give out= instead of hydra.sweep/hydra.run"
        )
    cfg = compose_script([a for a in argv if a not in passthrough], "run_study", "study.py")
    report_args = _report_args(cfg)  # checked before anything runs
    from experiments import report

    if cfg.report:
        built = report.build(Path(str(cfg.report)).expanduser(), **report_args)
        print(f"[study] wrote {built['md']} and {built['html']}")
        return 0
    if cfg.get("study") is None:
        raise ConfigError(
            f"give study=<name> (studies: {', '.join(group_choices('study')) or 'none'}) or report=<sweep dir>"
        )
    study = config_dict(cfg.study)
    cells = expand(study, search_dirs(argv)[1:])
    check_cells(cells)
    sweep = Path(str(cfg.out or REPO / "runs" / "study" / str(study.get("name", "study")))).expanduser().resolve()
    sweep.mkdir(parents=True, exist_ok=True)
    meta = {"study": study, "command": "python experiments/study.py " + " ".join(shlex.quote(a) for a in argv)}
    rc = launch(cells, sweep, passthrough, meta)
    try:
        built = report.build(sweep, **report_args)
    except ConfigError as exc:
        print(f"[study] no report: {exc}", file=sys.stderr)
        return rc or 1
    print(
        f"[study] wrote {built['md']} and {built['html']}"
        + (f"; {len(built['unfinished'])} run(s) unfinished" if built["unfinished"] else "")
    )
    if rc:
        print(
            f"[study] the launcher exited with status {rc}: some runs failed (see their run.log); re-run to retry them",
            file=sys.stderr,
        )
    return rc


if __name__ == "__main__":
    with user_errors():
        raise SystemExit(main(sys.argv[1:]))
