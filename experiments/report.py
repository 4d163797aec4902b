"""The report of a study: ``report.md`` and a self-contained ``report.html`` over the runs of a sweep directory.

    python experiments/study.py report=<sweep dir>       # (re)builds both from the runs there

What it holds, per group of runs that differ only in their seed (the grouping of
:func:`experiments.summarize.group_runs`: env, reward, agent, steps, dataset, then every other setting
that differs, e.g. a swept ``reward.scale``):

* **Learning curves**: true and proxy return of the periodic evaluations (``metrics.csv``) against env
  steps and against wall-clock seconds, the mean over seeds with a 95% confidence band (Student's t
  on the seeds' values; on a common wall-clock grid by linear interpolation, up to the shortest run).
* **Final table**: the IQM (interquartile mean) of the seeds' final true return with its 95%
  stratified-bootstrap confidence interval, and the probability of improvement over the same
  env / agent with ``reward=env`` (the Mann-Whitney statistic ``P(X > Y) + P(X = Y) / 2``, with its
  bootstrap interval), both from ``rliable`` (Agarwal et al., 2021, "Deep Reinforcement Learning at
  the Edge of the Statistical Precipice"); mean ± std and the per-seed values beside them; the final
  evaluation (``summary.json``) and the best periodic one (``best_eval_true_return``, optimistic:
  chosen on the evaluation episodes) kept in separate columns (statistics: :mod:`experiments.study_stats`).
* **Reward distances** per env (:mod:`experiments.study_rewards`): EPIC and STARC between every pair of
  providers and the true reward where the env's reward has a closed form; elsewhere Pearson and Spearman
  correlations of proxy and true reward on the runs' own transitions (stepped by their final policies).
* **Reward-hacking flags** per run: (1) *proxy/true divergence* (Pan et al., 2022, "The Effects of
  Reward Misspecification"): the evaluations split into ``windows`` consecutive windows, flagged where
  the mean proxy return rises from one window to the next by more than ``threshold`` of its range over
  the run while the mean true return falls by more than ``threshold`` of its range (never with
  ``reward=env``, where proxy is true); (2) *a dominant component*: where the provider logs named
  components (``component/<name>`` in ``metrics.csv``), one whose magnitude is more than ``dominance``
  of the components' summed magnitudes at the last evaluation. Each flag links to the run directory
  and its videos.
* **What the final policies did** per group (:mod:`experiments.report_media`): ``<video>`` elements with
  *relative* links to the mp4 files in the run directories (the HTML stays small; keep it beside the
  runs), or, for text envs, the first samples (prompt, response, true reward) in their place; Gantt
  charts of the final schedules for job-shop. The PNG figures are inlined as base64 and the CSS is
  inline, so the page needs no network.
* **Provenance** per run: the command, git commit, device, seed, training steps/s, wall time (from
  ``summary.json``), the reward program's hash (``reward_program.json``; with the task and the model
  where a language model wrote it, every call's prompt being in that file) for code rewards and the
  teacher's settings and labels used for preference rewards (``config.yaml`` / ``metrics.csv``), and
  the package versions recorded in the study's ``study.json`` (those of the Python building the report
  where there is none).
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from envs.errors import ConfigError
from experiments.plots import read_metrics
from experiments.report_media import media_section, png_html, rel
from experiments.rundir import package_versions
from experiments.study_rewards import run_distances
from experiments.study_stats import interval_estimates, mean_ci
from experiments.summarize import collect, group_runs


@dataclass
class Group:
    """Runs that differ only in their seed: ``name`` (env/reward/agent + differing settings) and their summaries."""

    identity: dict[str, Any]
    setting: str
    runs: list[dict[str, Any]]

    @property
    def name(self) -> str:
        """``env / reward / agent`` (study variant names where they differ) and ``[differing settings]``."""
        variants = self.runs[0].get("variants") or {}  # the study's names of the cell (study.json), where they differ
        parts = [str(self.identity[k]) if variants.get(k, self.identity[k]) == self.identity[k]
                 else f"{variants[k]} ({self.identity[k]})" for k in ("env", "reward", "agent")]  # fmt: skip
        base = " / ".join(parts)
        return f"{base} [{self.setting}]" if self.setting else base


@dataclass
class Flag:
    """A reward-hacking flag on one run: ``kind`` (``divergence`` or ``dominant component``) and what was seen."""

    kind: str
    run: str
    message: str
    videos: list[str] = field(default_factory=list)


def load_groups(sweep: Path) -> tuple[list[Group], list[Path]]:
    """The finished runs below ``sweep`` grouped by every differing setting, and the unfinished run dirs.

    Raises:
        ConfigError: No such directory, or no finished run (``summary.json``) below it.
    """
    if not Path(sweep).is_dir():
        raise ConfigError(f"report={sweep}: no such directory")
    summaries, unfinished = collect([Path(sweep)])
    if not summaries:
        raise ConfigError(f"report={sweep}: no finished runs (summary.json) below it")
    record = Path(sweep) / "study.json"
    cells = {c["name"]: c for c in json.loads(record.read_text()).get("cells", [])} if record.exists() else {}
    for s in summaries:  # a study's cell: its variant names and the run.py command it stands for
        cell = cells.get(Path(s["run"]).name)
        if cell is not None:
            s["variants"], s["command"] = cell.get("variants"), cell.get("command") or s.get("command")
    groups = [Group(i, label, sorted(runs, key=lambda r: r["seed"])) for i, label, runs in group_runs(summaries)]
    order = {name: k for k, name in enumerate(cells)}  # a study's groups in the order of its grid
    groups.sort(key=lambda g: min(order.get(Path(r["run"]).name, len(order)) for r in g.runs))
    return groups, unfinished


# --- statistics ----------------------------------------------------------------------------------


def reference_of(group: Group, groups: Sequence[Group]) -> Group | None:
    """The ``reward=env`` group with the same env, agent, steps, dataset and non-reward settings (``None``: none)."""
    if group.identity["reward"] == "env":
        return None
    own = {t for t in group.setting.split() if not t.startswith("reward.")}
    for g in groups:
        same = all(g.identity[k] == group.identity[k] for k in ("env", "agent", "steps", "dataset"))
        if (
            same
            and g.identity["reward"] == "env"
            and {t for t in g.setting.split() if not t.startswith("reward.")} == own
        ):
            return g
    return None


# --- hacking flags -------------------------------------------------------------------------------


def hacking_flags(
    run: Mapping[str, Any], windows: int = 5, threshold: float = 0.1, dominance: float = 0.9
) -> list[Flag]:
    """Reward-hacking flags of one run (module docstring).

    Args:
        run: A run's summary (with its ``run`` directory) as :func:`experiments.summarize.collect` gives.
        windows: Consecutive windows the evaluations are split into.
        threshold: Rise of the proxy / fall of the true return between windows, as a fraction of its range.
        dominance: Share of the summed component magnitudes above which one component dominates.

    Returns:
        The flags (empty when none).
    """
    run_dir = Path(run["run"])
    m = read_metrics(run_dir / "metrics.csv")
    videos = list(run.get("videos") or [])
    flags: list[Flag] = []
    if m and "true_return" in m and "proxy_return" in m and len(m["step"]) >= 2:
        true = np.array_split(m["true_return"], min(windows, len(m["step"])))
        proxy = np.array_split(m["proxy_return"], min(windows, len(m["step"])))
        steps = np.array_split(m["step"], min(windows, len(m["step"])))
        t_mean, p_mean = np.array([np.nanmean(w) for w in true]), np.array([np.nanmean(w) for w in proxy])
        t_range = float(np.nanmax(m["true_return"]) - np.nanmin(m["true_return"]))
        p_range = float(np.nanmax(m["proxy_return"]) - np.nanmin(m["proxy_return"]))
        seen = []
        for i in range(len(t_mean) - 1):
            dp, dt = p_mean[i + 1] - p_mean[i], t_mean[i + 1] - t_mean[i]
            if p_range > 0 and t_range > 0 and dp > threshold * p_range and dt < -threshold * t_range:
                seen.append(f"proxy {dp:+.3g}, true {dt:+.3g} from steps {int(steps[i][0])}-{int(steps[i][-1])} "
                            f"to {int(steps[i + 1][0])}-{int(steps[i + 1][-1])}")  # fmt: skip
        if seen:
            flags.append(
                Flag("divergence", str(run_dir), "proxy return rose while true return fell: " + "; ".join(seen), videos)
            )
    components = {k.split("/", 1)[1]: v for k, v in m.items() if k.startswith("component/")}
    if len(components) >= 2:
        last = {k: abs(float(v[np.isfinite(v)][-1])) if np.isfinite(v).any() else 0.0 for k, v in components.items()}
        total = sum(last.values())
        name, top = max(last.items(), key=lambda kv: kv[1])
        if total > 0 and top / total > dominance:
            flags.append(Flag("dominant component", str(run_dir),
                              f"component {name!r} is {top / total:.0%} of the components' summed magnitude at the last evaluation", videos))  # fmt: skip
    return flags


# --- figures -------------------------------------------------------------------------------------


def curves_png(group: Group) -> bytes | None:
    """PNG of a group's true and proxy return against env steps and wall-clock (mean, 95% CI band); ``None``: no metrics."""
    metrics = [m for m in (read_metrics(Path(r["run"]) / "metrics.csv") for r in group.runs) if m]
    if not metrics:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    steps = np.unique(np.concatenate([m["step"] for m in metrics]))
    wall_end = min(float(np.nanmax(m["wall_time"])) for m in metrics) if all("wall_time" in m for m in metrics) else 0.0
    wall = np.linspace(0.0, wall_end, 50)
    for ax, x_name in zip(axes, ("env steps", "wall-clock seconds"), strict=True):
        twin = ax.twinx()
        for column, target, color in (("true_return", ax, "tab:blue"), ("proxy_return", twin, "tab:orange")):
            if x_name == "env steps":
                x = steps
                values = np.array([np.interp(steps, m["step"], m[column], left=np.nan, right=np.nan) for m in metrics])
            elif wall_end > 0:
                x = wall
                values = np.array(
                    [np.interp(wall, m["wall_time"], m[column], left=np.nan, right=np.nan) for m in metrics]
                )
            else:
                continue
            mean, half = mean_ci(values)
            target.plot(
                x, mean, color=color, label=column.replace("_", " "), ls="-" if column == "true_return" else "--"
            )
            target.fill_between(x, mean - half, mean + half, color=color, alpha=0.2)
        ax.set_xlabel(x_name)
        ax.set_ylabel("true return", color="tab:blue")
        twin.set_ylabel("proxy return", color="tab:orange")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{group.name}: mean of {len(metrics)} seed(s), 95% CI", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


# --- reward distances ----------------------------------------------------------------------------


def _matrix_md(name: str, m: Mapping[str, Any]) -> list[str]:
    labels = [f"{i}: {n}" for i, n in enumerate(m["names"])]
    rows = [f"| {name} | " + " | ".join(str(i) for i in range(len(labels))) + " |", "|" + "---|" * (len(labels) + 1)]
    rows += [f"| {labels[i]} | " + " | ".join(_num(v) for v in row) + " |"
             for i, row in enumerate(m[name.lower()])]  # fmt: skip
    return rows


def _epic_text(m: Mapping[str, Any]) -> str:
    return (f"EPIC and STARC (EPIC canonicalisation, L2; halved: 0 = same up to shaping and positive scale, 1 = negated) "
            f"on {m['transitions']} uniform-random transitions, gamma {m['gamma']}; `true` is {m['true_reward']}. "
            "EPIC is undefined where a canonical reward is constant; STARC puts such a reward at 0.5 from any other.")  # fmt: skip


def _correlation_text(m: Mapping[str, Any]) -> str:
    own = "; ".join(
        f"{k}: Pearson {_num(v['pearson'])}, Spearman {_num(v['spearman'])} (n={v['n']})" for k, v in m["own"].items()
    )
    if m.get("own_only"):  # rewards on frames, on an env whose reward has a closed form (EPIC above covers the rest)
        return (f"Rewards that score rendered frames cannot be put on uniform-random states: Pearson and Spearman "
                f"correlations of proxy and true reward per transition on each group's own transitions (its runs' final "
                f"policies, latest checkpoint, actions sampled from the policy, frames rendered and scored on the spot): {own}. "
                "Shaping and scale are not factored out (unlike EPIC). Undefined where a reward is constant.")  # fmt: skip
    return (f"No closed-form reward here: Pearson and Spearman correlations of proxy and true reward per transition, "
            f"on the runs' own transitions (collected by each run's final policy, latest checkpoint, actions sampled "
            f"from the policy, and scored on the spot; every run of a group). Each group on its own transitions: {own}. "
            f"The matrices: the providers that need no frames re-scored on all {m['transitions']} pooled transitions, "
            f"`true` is the env's reward; shaping and scale are not factored out (unlike EPIC). Undefined where a reward is constant.")  # fmt: skip


def _num(x: float | None) -> str:
    return "undef." if x is None else f"{x:.3f}"


# --- provenance ----------------------------------------------------------------------------------


def provenance(
    run: Mapping[str, Any], study_versions: Mapping[str, str] | None = None, reference: str = "study"
) -> dict[str, Any]:
    """What reproduces a run: a row of the report's provenance table.

    Command, commit, device, seed, steps/s, wall time and package versions; for a reward program its hash,
    and for one a model wrote its task, model and where its prompts are; for a preference reward the
    teacher's settings and the labels used.

    Args:
        run: The run's summary with its ``run`` directory (:func:`experiments.summarize.collect`).
        study_versions: The versions the study recorded at launch (or those of the report's interpreter): the
            run's ``versions`` are then shown as ``as the study`` or as the packages that differ (e.g. a
            cluster node with another environment); ``None``: all of them.
        reference: What ``study_versions`` are, in the text (``study``, ``here``).
    """
    run_dir = Path(run["run"])
    out: dict[str, Any] = {
        k: run.get(k) for k in ("seed", "command", "git_commit", "device", "train_steps_per_s", "wall_time_s")
    }
    own = run.get("versions") or {}
    if not own:
        out["versions"] = "not recorded"
    elif study_versions is None:
        out["versions"] = " ".join(f"{k}={v}" for k, v in own.items())
    else:
        differ = (f"{k}={v} ({reference}: {study_versions.get(k, '-')})" for k, v in own.items() if study_versions.get(k) != v)
        out["versions"] = " ".join(differ) or ("as the study" if reference == "study" else "as here")
    program = run_dir / "reward_program.json"
    if program.exists():
        meta = json.loads(program.read_text())
        out["program_hash"] = meta.get("code_hash")
        out["program_origin"] = meta.get("origin")
        if meta.get("origin") == "model":  # written by a language model: its task (the prompt's) and the model
            calls = meta.get("calls") or []
            out["program_task"] = meta.get("task")
            out["program_model"] = f"{meta.get('backend')}:{meta.get('model')} ({len(calls)} call(s))"
            out["program_prompts"] = f"{run_dir.name}/reward_program.json: calls[].messages ({len(calls)} prompt(s))"
    settings = run.get("settings", {})
    teacher = {k: v for k, v in settings.items() if k.startswith("reward.teacher.")}
    if teacher:
        out["teacher"] = " ".join(f"{k.removeprefix('reward.teacher.')}={v}" for k, v in sorted(teacher.items()))
        labels = read_metrics(run_dir / "metrics.csv").get("labels")
        out["labels"] = None if labels is None or not np.isfinite(labels).any() else int(np.nanmax(labels))
    return out


def versions(sweep: Path) -> tuple[dict[str, str], str]:
    """Package versions from the study's ``study.json`` (and where they came from), else this interpreter's."""
    record = Path(sweep) / "study.json"
    if record.exists():
        found = json.loads(record.read_text()).get("versions")
        if found:
            return dict(found), "recorded at launch (study.json)"
    return package_versions(), "of the Python that built this report (no study.json)"


# --- the report ----------------------------------------------------------------------------------

CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}.flag{color:#b00}video{margin:2px}code{font-size:12px}
td.text{text-align:left;white-space:pre-wrap;max-width:480px}"""


def _ci(est: tuple[float, float, float] | None, digits: int = 1) -> str:
    return "-" if est is None else f"{est[0]:.{digits}f} [{est[1]:.{digits}f}, {est[2]:.{digits}f}]"


def _mean_std(values: Sequence[float | None] | np.ndarray) -> str:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    return "-" if not v.size else (f"{v[0]:.1f}" if v.size == 1 else f"{v.mean():.1f} ± {v.std():.1f}")


def table_rows(groups: Sequence[Group], reps: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """One row per group: final and best true return (IQM with CI, mean ± std, per seed), P(improvement) over ``reward=env``."""
    final = {g.name: np.array([r["true_return_mean"] for r in g.runs], dtype=np.float64) for g in groups}
    best = {g.name: np.array([r.get("best_eval_true_return") for r in g.runs], dtype=np.float64) for g in groups}
    best = {k: v for k, v in best.items() if np.isfinite(v).all()}
    pairs = {g.name: (g.name, ref.name) for g in groups if (ref := reference_of(g, groups)) is not None}
    est = interval_estimates(final, pairs, reps, seed)
    est_best = interval_estimates(best, {}, reps, seed)
    rows = []
    for g in groups:
        pair = pairs.get(g.name)
        rows.append({
            "group": g.name, "n": len(g.runs), "seeds": [r["seed"] for r in g.runs],
            "final_iqm": est[f"iqm:{g.name}"], "final": _mean_std(final[g.name]),
            "final_per_seed": [round(float(x), 2) for x in final[g.name]],
            "poi_vs_env": est.get(f"poi:{g.name}"), "reference": pair[1] if pair else None,
            "best_iqm": est_best.get(f"iqm:{g.name}"), "best": _mean_std([r.get("best_eval_true_return") for r in g.runs]),
            "proxy": _mean_std([r.get("proxy_return_mean") for r in g.runs]),
        })  # fmt: skip
    return rows


COLUMNS = ("group", "n", "final true: IQM [95% CI]", "final: mean ± std", "final per seed",
           "P(improvement over reward=env) [95% CI]", "best eval: IQM [95% CI]", "best: mean ± std", "final proxy: mean ± std")  # fmt: skip


def _cells(row: Mapping[str, Any]) -> list[str]:
    return [row["group"], str(row["n"]), _ci(row["final_iqm"]), row["final"], " ".join(f"{v:g}" for v in row["final_per_seed"]),
            _ci(row["poi_vs_env"], 2), _ci(row["best_iqm"]), row["best"], row["proxy"]]  # fmt: skip


def build(
    sweep: Path,
    out: Path | None = None,
    reps: int = 2000,
    seed: int = 0,
    with_distances: bool = True,
    distance_samples: int = 1000,
) -> dict[str, Any]:
    """Write ``report.md`` (figures beside it in ``report_files/``) and ``report.html`` for the runs below ``sweep``.

    Args:
        sweep: The sweep directory (its run directories anywhere below).
        out: Where to write (default: ``sweep``).
        reps: Bootstrap resamples of the confidence intervals.
        seed: Seed of the bootstrap.
        with_distances: Add the reward distances (:func:`experiments.study_rewards.run_distances`).
        distance_samples: Transitions per provider for them (``samples`` of ``run_distances``).

    Returns:
        ``rows`` (:func:`table_rows`), ``flags``, ``md`` and ``html`` (paths), ``unfinished`` (run dirs).

    Raises:
        ConfigError: No such directory or no finished run.
    """
    sweep = Path(sweep)
    groups, unfinished = load_groups(sweep)
    out = sweep if out is None else Path(out)
    (out / "report_files").mkdir(parents=True, exist_ok=True)
    rows = table_rows(groups, reps, seed)
    flags = {g.name: [f for r in g.runs for f in hacking_flags(r)] for g in groups}
    pkg, pkg_source = versions(sweep)
    md = [f"# Study report: {sweep.name}", "", f"{sum(len(g.runs) for g in groups)} finished runs in {len(groups)} groups"
          + (f"; {len(unfinished)} unfinished left out" if unfinished else "") + f". Package versions {pkg_source}: "
          + ", ".join(f"{k} {v}" for k, v in pkg.items()) + ".", "",
          "Final true return over seeds: IQM with 95% stratified-bootstrap CI and probability of improvement over "
          "`reward=env` (rliable); mean ± std; the best periodic evaluation kept apart.", "",
          "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]  # fmt: skip
    md += ["| " + " | ".join(c.replace("|", "\\|") for c in _cells(r)) + " |" for r in rows]
    distances = run_distances(groups, samples=distance_samples) if with_distances else []
    tables: list[list[list[str]]] = []  # per env, the matrices' markdown lines (shown again as HTML)
    for d in distances:
        md += ["", f"## Reward distances on {d['env']}", ""]
        tables.append([])
        for m, text in ((d["matrix"], _epic_text), (d.get("correlations"), _correlation_text)):
            if m is not None:
                md += [text(m), ""]
                for name in ("EPIC", "STARC") if m is d["matrix"] else () if m.get("own_only") else ("Pearson", "Spearman"):
                    tables[-1].append(_matrix_md(name, m))
                    md += [*tables[-1][-1], ""]
        md += [f"- {n}" for n in d["notes"]]
    body = [f"<h1>Study report: {html.escape(sweep.name)}</h1>", f"<p>{html.escape(md[2])}</p>", "<table><tr>"
            + "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS) + "</tr>"]  # fmt: skip
    body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in _cells(r)) + "</tr>" for r in rows] + ["</table>"]
    for d, env_tables in zip(distances, tables, strict=True):  # the markdown tables, as HTML
        body.append(f"<h2>Reward distances on {html.escape(d['env'])}</h2>")
        for m, text in ((d["matrix"], _epic_text), (d.get("correlations"), _correlation_text)):
            if m is not None:
                body.append(f"<p>{html.escape(text(m))}</p>")
        for lines in env_tables:
            cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in (lines[0], *lines[2:])]
            body.append(
                "<table>"
                + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
                + "</table>"
            )
        body += [f"<p>{html.escape(n)}</p>" for n in d["notes"]]
    for i, g in enumerate(groups):
        md += ["", f"## {g.name}", ""]
        body.append(f"<h2>{html.escape(g.name)}</h2>")
        png = curves_png(g)
        if png is not None:
            (out / "report_files" / f"curves_{i}.png").write_bytes(png)
            md.append(f"![curves](report_files/curves_{i}.png)")
            body.append(png_html(png, "curves"))
        md += ["", "Reward-hacking flags: " + ("none" if not flags[g.name] else "")]
        body.append("<p>Reward-hacking flags: " + ("none" if not flags[g.name] else "") + "</p><ul>")
        for f in flags[g.name]:
            links = [f"[run]({rel(f.run, out)})"] + [f"[{v}]({rel(Path(f.run) / v, out)})" for v in f.videos]
            md.append(f"- **{f.kind}** ({', '.join(links)}): {f.message}")
            hrefs = [f'<a href="{html.escape(rel(f.run, out))}">run</a>'] + [
                f'<a href="{html.escape(rel(Path(f.run) / v, out))}">{html.escape(v)}</a>' for v in f.videos
            ]
            body.append(
                f'<li class="flag"><b>{html.escape(f.kind)}</b> ({", ".join(hrefs)}): {html.escape(f.message)}</li>'
            )
        body.append("</ul>")
        media_md, media_html = media_section(g.runs, out, f"group_{i}")
        md += media_md
        body += media_html
        prov = [provenance(r, pkg, "study" if pkg_source.startswith("recorded") else "here") for r in g.runs]
        keys = list(dict.fromkeys(k for p in prov for k in p))
        md += ["", "| run | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
        md += [f"| [{Path(r['run']).name}]({rel(r['run'], out)}) | " + " | ".join(str(p.get(k, "-")).replace("|", "\\|") for k in keys) + " |"
               for r, p in zip(g.runs, prov, strict=True)]  # fmt: skip
        body.append("<table><tr><th>run</th>" + "".join(f"<th>{html.escape(k)}</th>" for k in keys) + "</tr>")
        body += [f'<tr><td><a href="{html.escape(rel(r["run"], out))}">{html.escape(Path(r["run"]).name)}</a></td>'
                 + "".join(f"<td><code>{html.escape(str(p.get(k, '-')))}</code></td>" for k in keys) + "</tr>"
                 for r, p in zip(g.runs, prov, strict=True)]  # fmt: skip
        body.append("</table>")
    md_path, html_path = out / "report.md", out / "report.html"
    md_path.write_text("\n".join(md) + "\n")
    page = f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(sweep.name)}</title><style>{CSS}</style></head><body>'
    html_path.write_text(page + "\n".join(body) + "</body></html>\n")
    return {
        "rows": rows,
        "flags": [f for fs in flags.values() for f in fs],
        "md": md_path,
        "html": html_path,
        "unfinished": unfinished,
    }
