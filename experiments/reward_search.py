#!/usr/bin/env python
r"""Searching over language-model-written reward programs: Eureka and ICPL.

    python experiments/reward_search.py env=cartpole reward.task="balance the pole" \
        llm=local iterations=2 samples=4 [mode=eureka|icpl] [teacher=synthetic|terminal]

Each iteration asks the model (the ``llm`` config group: ``llm=openai|local|replay``, ``llm.model``,
``llm.base_url``, ...; the same as ``run.py reward=code``'s) for ``samples`` programs
(:func:`rewards.code.generate.propose`; failures of the static/load/smoke checks are recorded with
their reason), trains every accepted program for ``steps`` with ``experiments/run.py env=E
reward=code reward.source=PROGRAM agent=A`` (``workers`` at a time), and builds the next prompt:

* ``mode=eureka`` (Ma et al., 2023; their ``eureka.py``): each program's fitness is the maximum
  success rate over training where the env defines success (Eureka's ``max(consecutive_successes)``),
  else the true return of the final evaluation. The next prompt is built from *this* iteration's
  best program (the argmax of fitness, first on ties, as ``np.argmax``), even where an earlier
  iteration's was fitter, with Eureka's reward reflection (:func:`reflection`): each component's
  per-episode value at every evaluation over training with its maximum, mean and minimum, the
  task score (success rate) where the env defines one, else the ground-truth score (true
  return), and the episode length. The program's correlation with the env's reward is *not* in
  it: Eureka computes that figure but never shows it to the model, and it would leak the
  answer into the loop; ``feedback_correlation=true`` adds it, for ablations. The search's
  result (``best``) is the fittest program over all iterations;
* ``mode=icpl`` (In-Context Preference Learning, Yu et al., 2024): a teacher ranks the
  programs' rollout videos — ``teacher=synthetic`` prefers what the videos show, the final
  evaluation's success rate where the env defines one, else its true return (a simulated
  human; ties keep the sample order), ``teacher=terminal`` asks you, showing the video paths —
  and the prompt gets the most and least preferred programs with the preferred one's component
  statistics, but no true-reward numbers (no task score, return, episode length or correlation).

Everything lands in ``out``: per candidate ``iter_I/sample_J/`` with ``program.py`` and
``candidate.json`` (messages, backend, model, sampling, raw response, code hash, checks,
results) and the training run directory; ``search.json`` and ``summary.md`` with one table per
iteration; ``best_program.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from envs.errors import ConfigError
from experiments.cli import check_int, compose_script, config_dict, user_errors

REPO = Path(__file__).resolve().parents[1]
MODES = ("eureka", "icpl")
TEACHERS = ("synthetic", "terminal")
FORWARDED = ("env", "agent", "tuned")  # overrides passed on to every training run


def _validate(cfg: Any) -> None:
    for key in ("iterations", "samples", "steps", "workers", "eval_episodes"):
        check_int(cfg, key, 1)
    if cfg.mode not in MODES:
        raise ConfigError(f"mode={cfg.mode!r}; accepted: {', '.join(MODES)}")
    if cfg.teacher not in TEACHERS:
        raise ConfigError(f"teacher={cfg.teacher!r}; accepted: {', '.join(TEACHERS)}")
    if not isinstance(cfg.feedback_correlation, bool):
        raise ConfigError(f"feedback_correlation={cfg.feedback_correlation!r} must be true or false")
    if cfg.feedback_correlation and cfg.mode == "icpl":
        raise ConfigError("feedback_correlation=true is for mode=eureka: ICPL's feedback holds no true-reward numbers")
    if cfg.reward.get("name") != "code":
        raise ConfigError("reward_search.py searches over reward programs: use reward=code (the default)")
    if not cfg.reward.get("task"):
        raise ConfigError('reward_search.py needs reward.task="what the agent should do"')


def _train_args(argv: list[str], cfg: Any, program: Path, run_dir: Path) -> list[str]:
    forwarded = [a for a in argv if a.split("=", 1)[0].split(".", 1)[0].lstrip("+~") in FORWARDED]
    forwarded += [a for a in argv if a.startswith("reward.limits.")]
    given = {a.split("=", 1)[0].lstrip("+~") for a in argv}
    chosen = [f"{group}={cfg[group].name}" for group in ("env", "agent") if group not in given]
    return [
        sys.executable, str(REPO / "experiments" / "run.py"), *chosen, *forwarded, "reward=code",
        f"reward.source={program}", f"steps={cfg.steps}", f"seed={cfg.seed}", "device=cpu", "progress=false",
        f"eval.final_episodes={cfg.eval_episodes}", f"video.final_episodes={1 if cfg.mode == 'icpl' else 0}",
        f"hydra.run.dir={run_dir}",
    ]  # fmt: skip


def _train(args: list[str], run_dir: Path, timeout: float) -> dict[str, Any]:
    """One training run; its summary, metrics over training and component traces."""
    t = time.time()
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"trained": False, "error": f"training took longer than train_timeout_s={timeout}"}
    if proc.returncode != 0 or not (run_dir / "summary.json").exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"trained": False, "error": " | ".join(tail)[-600:], "train_s": round(time.time() - t, 1)}
    from experiments.rundir import CsvLog

    summary = json.loads((run_dir / "summary.json").read_text())
    rows = CsvLog(run_dir / "metrics.csv").read()
    traces: dict[str, list[float | None]] = {}
    for row in rows:
        for key, value in row.items():
            if key in ("true_return", "success", "episode_length") or key.startswith("component/"):
                traces.setdefault(key, []).append(round(float(value), 3) if value not in ("", None) else None)
    return {
        "trained": True,
        "true_return": summary["true_return_mean"],
        "success": summary["success_rate"],
        "proxy_return": summary["proxy_return_mean"],
        "components": summary.get("components", {}),
        "traces": traces,
        "steps_at": [int(r["step"]) for r in rows],
        "videos": [str(run_dir / v) for v in summary.get("videos", [])],
        "train_s": round(time.time() - t, 1),
    }


def fitness(results: dict[str, Any]) -> float:
    """Eureka's selection score of a trained program.

    Args:
        results: A candidate's training results (``_train``): ``success`` (final evaluation, ``None``
            where the env defines no success), ``true_return`` and ``traces["success"]``.

    Returns:
        The maximum success rate over training (every evaluation, the final one included) where the
        env defines success, else the true return of the final evaluation.
    """
    successes = [v for v in results.get("traces", {}).get("success", []) if v is not None]
    if results.get("success") is not None:
        successes.append(results["success"])
    return float(max(successes)) if successes else float(results["true_return"])


def _stats(values: list[Any]) -> str:
    """``[v0, v1, ...], Max: .., Mean: .., Min: ..`` as Eureka prints a metric (missing values skipped)."""
    known = [float(v) for v in values if v is not None]
    shown = "[" + ", ".join("-" if v is None else f"{float(v):.2f}" for v in values) + "]"
    if not known:
        return shown
    return f"{shown}, Max: {max(known):.2f}, Mean: {sum(known) / len(known):.2f}, Min: {min(known):.2f}"


def reflection(cand: dict[str, Any], with_true: bool, with_correlation: bool = False) -> str:
    """Eureka's reward reflection on one trained program (module docstring).

    Args:
        cand: A trained candidate: ``results`` from ``_train`` and ``check`` from the validation.
        with_true: Add the task score (success rate) where the env defines one, else the
            ground-truth score (true return), and the episode length (Eureka); ``False`` for ICPL.
        with_correlation: Add the correlation of the program's reward with the env's on random
            transitions (leaks the true reward; ``feedback_correlation=true``).

    Returns:
        The text for the next prompt: one line per component and metric, each with its values at
        the evaluations over training and their maximum, mean and minimum.
    """
    res = cand["results"]
    traces = res.get("traces", {})
    steps = res.get("steps_at") or []
    lines = [
        f"We trained a policy with this reward program for {steps[-1] if steps else '?'} steps and evaluated it at "
        f"steps {steps}; the values of each reward component (sum per episode) at those evaluations, "
        "and their maximum, mean and minimum:"
    ]
    for key, values in traces.items():
        if key.startswith("component/"):
            lines.append(f"- component {key.split('/', 1)[1]}: {_stats(values)}")
    if with_true:
        if res.get("success") is not None:
            lines.append(f"- task score (success rate): {_stats(traces.get('success', []))}")
        else:
            lines.append(f"- ground-truth score (the task's own return per episode): {_stats(traces.get('true_return', []))}")
        if traces.get("episode_length"):
            lines.append(f"- episode length: {_stats(traces['episode_length'])}")
    if with_correlation:
        corr = cand["check"].get("pearson_true")
        lines.append(
            f"- correlation of your reward with the task's reward on random transitions: {corr if corr is None else round(corr, 3)}"
        )
    return "\n".join(lines)


REFLECTION_TIPS = """\
Analyse the feedback, then write an improved reward function. Some tips (Eureka's):
(1) If the task score is always near zero, rewrite the entire reward function.
(2) If a component's values are nearly identical throughout, RL cannot optimise it as written:
    change its scale or temperature, rewrite it, or discard it.
(3) If some components' magnitudes are much larger than others', rescale them to a proper range.
Analyse each existing component in this way first, then write the reward function."""


def rank_icpl(trained: list[dict[str, Any]], teacher: str) -> list[dict[str, Any]]:
    """ICPL's ranking of trained programs by their rollouts, most preferred first (module docstring).

    Args:
        trained: Trained candidates (``results`` with ``success``, ``true_return``, ``videos``).
        teacher: ``synthetic`` (the final evaluation's success rate where the env defines one, else
            its true return; ties keep the given order) or ``terminal`` (asks on stdin).

    Returns:
        The candidates, most preferred first.
    """
    if teacher == "synthetic":

        def shown(c: dict[str, Any]) -> tuple[float, float]:
            res = c["results"]
            success = res.get("success")
            return (float(res["true_return"]) if success is None else float(success), float(res["true_return"]))

        return sorted(trained, key=shown, reverse=True)  # stable: ties keep the sample order
    print("\nICPL: watch the rollout videos and rank the programs.")
    for i, cand in enumerate(trained):
        print(f"  [{i}] {cand['name']}: {', '.join(cand['results']['videos']) or '(no video)'}")
    while True:
        answer = input("indices from most to least preferred (e.g. 2 0 1): ").split()
        try:
            order = [int(a) for a in answer]
        except ValueError:
            order = []
        if sorted(order) == list(range(len(trained))):
            return [trained[i] for i in order]
        print(f"please give each of 0..{len(trained) - 1} once")


def _table(iteration: int, cands: list[dict[str, Any]]) -> str:
    head = "| iter | sample | check | code | fitness | true return | success | proxy return | corr. (random) | train s |\n"
    head += "|---|---|---|---|---|---|---|---|---|---|\n"
    rows = []
    for c in cands:
        res, check = c.get("results", {}), c["check"]
        status = "passed" if check["ok"] else f"{check['stage']}: {check['message'][:60]}"
        if check["ok"] and not res.get("trained", False):
            status = f"train failed: {res.get('error', '')[:60]}"

        def f(x: Any) -> str:
            return "-" if x is None else f"{x:.3g}" if isinstance(x, float) else str(x)

        rows.append(
            f"| {iteration} | {c['sample']} | {status.replace('|', '/').replace(chr(10), ' ')} | {c['code_hash'] or '-'} | "
            f"{f(res.get('fitness'))} | {f(res.get('true_return'))} | {f(res.get('success'))} | {f(res.get('proxy_return'))} | "
            f"{f(check.get('pearson_true'))} | {f(res.get('train_s'))} |"
        )
    return head + "\n".join(rows) + "\n"


def main(argv: list[str]) -> dict[str, Any]:
    """Run the search, iteration by iteration, and write its record (module docstring).

    Args:
        argv: ``key=value`` overrides of ``experiments/conf/reward_search.yaml`` (``env=``,
            ``reward.task=``, ``llm=``, ``iterations=``, ``samples=``, ``mode=``, ``teacher=`` ...).

    Returns:
        The contents of ``search.json``: the resolved ``config``, ``env_description``, one entry per
        iteration (counts, rejections by check stage, candidates), ``best`` (``None`` when no program
        could be trained) and ``wall_time_s``.

    Raises:
        ConfigError: A bad setting.
        LLMError: Every model call of an iteration failed.
    """
    cfg = compose_script(argv, "reward_search", "reward_search.py")
    _validate(cfg)
    import torch
    from omegaconf import OmegaConf

    from envs.make import make_env
    from experiments.rundir import write_json_atomic
    from rewards.code.generate import propose
    from rewards.code.llm import LLMError, Sampling, backend_from_config
    from rewards.code.prompts import describe_env
    from rewards.code.provider import example_programs, sandbox_limits
    from rewards.code.validate import CheckResult, sample_transitions

    torch.set_num_threads(int(cfg.torch_threads))
    rc = cfg.reward
    env_cfg = config_dict(cfg.env)
    limits = sandbox_limits(config_dict(rc.limits))
    backend = backend_from_config(config_dict(cfg.llm) if cfg.get("llm") else None)
    sampling = Sampling(float(rc.temperature), float(rc.top_p), int(rc.max_tokens))
    out = (
        Path(str(cfg.out)).expanduser()
        if cfg.out
        else REPO / "runs" / "reward_search" / f"{env_cfg['name']}_{cfg.mode}_{datetime.now():%Y-%m-%d_%H-%M-%S}"
    )
    out.mkdir(parents=True, exist_ok=True)
    probe = make_env(env_cfg)
    try:
        description = describe_env(probe, str(env_cfg["name"]))
    finally:
        probe.close()
    sample = sample_transitions(env_cfg, int(rc.smoke_samples), int(cfg.seed))
    examples = example_programs(rc.examples)
    print(
        f"reward search ({cfg.mode}) on {env_cfg['name']}: {cfg.iterations} iterations x {cfg.samples} programs, "
        f"backend {backend.name} ({backend.model}); writing to {out}",
        flush=True,
    )

    t0 = time.time()
    record: dict[str, Any] = {
        "config": OmegaConf.to_container(cfg, resolve=True),
        "iterations": [],
        "env_description": description,
    }
    best: dict[str, Any] | None = None
    feedback, previous = None, None
    tables = []
    for it in range(int(cfg.iterations)):
        cands: list[dict[str, Any]] = []
        for j in range(int(cfg.samples)):
            cdir = out / f"iter_{it}" / f"sample_{j}"
            cdir.mkdir(parents=True, exist_ok=True)
            base = {"iteration": it, "sample": j, "name": f"iter_{it}/sample_{j}", "dir": str(cdir)}
            try:
                calls = propose(backend, str(rc.task), description, sample, sampling, it * int(cfg.samples) + j,
                                int(rc.attempts), feedback, previous, examples, limits)  # fmt: skip
            except LLMError as error:  # the model call itself failed (after its retries): a lost sample
                cands.append(base | {"code": None, "code_hash": "", "attempts": [], "response": None,
                                     "check": CheckResult(False, "model", str(error)).to_dict()})  # fmt: skip
                print(f"  iter {it} sample {j}: model call failed: {str(error)[:200]}", flush=True)
                continue
            final = calls[-1]
            if final.code:
                (cdir / "program.py").write_text(final.code)
            cands.append(final.to_dict() | base | {"attempts": [c.to_dict() for c in calls[:-1]]})
            verdict = "accepted" if final.check.ok else f"rejected at {final.check.stage}: {final.check.message[:120]}"
            print(
                f"  iter {it} sample {j}: {verdict} ({final.seconds:.1f} s{', cached' if final.cached else ''})",
                flush=True,
            )
        if all(c["check"]["stage"] == "model" for c in cands):
            raise LLMError(f"every model call of iteration {it} failed; the first: {cands[0]['check']['message']}")

        accepted = [c for c in cands if c["check"]["ok"]]
        jobs = {
            c["name"]: _train_args(argv, cfg, Path(c["dir"]) / "program.py", Path(c["dir"]) / "run") for c in accepted
        }
        with ThreadPoolExecutor(max_workers=int(cfg.workers)) as pool:
            futures = {
                c["name"]: pool.submit(_train, jobs[c["name"]], Path(c["dir"]) / "run", float(cfg.train_timeout_s))
                for c in accepted
            }
            for c in accepted:
                c["results"] = futures[c["name"]].result()
                c["results"]["command"] = " ".join(jobs[c["name"]][1:])
        trained = [c for c in accepted if c["results"].get("trained")]
        for c in trained:
            c["results"]["fitness"] = fitness(c["results"])
        for c in cands:
            write_json_atomic(Path(c["dir"]) / "candidate.json", c)

        top = None
        if trained:
            if cfg.mode == "eureka":
                top = max(trained, key=lambda c: c["results"]["fitness"])  # the first on ties, as np.argmax
                if best is None or top["results"]["fitness"] > best["results"]["fitness"]:
                    best = top
                feedback = (
                    "Your previous program was the best of your last answers. "
                    + reflection(top, with_true=True, with_correlation=bool(cfg.feedback_correlation))
                    + "\n" + REFLECTION_TIPS
                )
            else:
                ranked = rank_icpl(trained, str(cfg.teacher))
                top, worst = ranked[0], ranked[-1]
                best = top  # ICPL's result: the preferred program of the last ranking
                feedback = ("A person watched the policies' rollouts and preferred the policy trained with your previous program. "
                            + reflection(top, with_true=False)
                            + (f"\nThe least preferred program was:\n```python\n{worst['code'].strip()}\n```" if worst is not top else "")
                            + "\nWrite a reward function that improves on the preferred one.")  # fmt: skip
            previous = top["code"]
        elif accepted or cands:
            reasons = "\n".join(
                f"- {c['check']['stage']}: {c['check']['message'][:300]}" for c in cands if not c["check"]["ok"]
            )
            feedback = (
                f"None of the programs could be trained. Their errors:\n{reasons}\nWrite a program that avoids them."
            )

        counts = {"asked": len(cands), "accepted": len(accepted), "trained": len(trained)}
        rejected: dict[str, int] = {}
        for c in cands:
            if not c["check"]["ok"]:
                rejected[c["check"]["stage"]] = rejected.get(c["check"]["stage"], 0) + 1
        record["iterations"].append({"iteration": it, "counts": counts, "rejected_by_stage": rejected,
                                     "iteration_best": top["name"] if top else None,
                                     "best_so_far": best["name"] if best else None, "candidates": cands})  # fmt: skip
        tables.append(_table(it, cands))
        print(tables[-1], flush=True)
        write_json_atomic(out / "search.json", record)

    record["best"] = None if best is None else {k: best[k] for k in ("name", "code_hash", "code", "results")}
    record["wall_time_s"] = round(time.time() - t0, 1)
    write_json_atomic(out / "search.json", record)
    if best is not None:
        (out / "best_program.py").write_text(best["code"])
    totals = {k: sum(i["counts"][k] for i in record["iterations"]) for k in ("asked", "accepted", "trained")}
    summary = [f"# reward search: {env_cfg['name']}, mode {cfg.mode}, backend {backend.name} ({backend.model})\n",
               f"task: {rc.task}\n", f"programs asked {totals['asked']}, accepted {totals['accepted']}, trained {totals['trained']}; "
               f"wall {record['wall_time_s']} s\n", *tables]  # fmt: skip
    if best is not None:
        summary.append(
            f"\nbest: {best['name']} ({best['code_hash']}), fitness {best['results']['fitness']:.3g}, "
            f"true return {best['results']['true_return']:.3g}\n"
        )
    (out / "summary.md").write_text("\n".join(summary))
    print(summary[2].strip())
    print(
        f"best: {record['best']['name'] if best else 'none (no program could be trained)'}; wrote {out / 'search.json'} and {out / 'summary.md'}"
    )
    return record


if __name__ == "__main__":
    with user_errors():
        main(sys.argv[1:])
