"""What the final policies did, per group of a study's report (:mod:`experiments.report`): videos, Gantt charts, samples.

Each section comes as markdown lines (figures written to ``report_files/``, links relative to the report)
and HTML parts (figures inlined as base64 PNG; text HTML-escaped), from what the run directories hold:

* **Videos** (``summary.json``'s ``videos``): ``<video>`` elements with relative links to the mp4 files.
* **Gantt charts** (job-shop runs, ``schedules/<instance>.json`` written by the runner from the final
  evaluation's schedules, :mod:`envs.jobshop.env`): one schedule per run (the first by file name),
  redrawn with the env's own renderer (:func:`envs.jobshop.gantt.draw_gantt`: machines as rows, jobs
  as colours, the makespan in red); the best-known makespan is not in the file, so not on the chart.
* **Samples** (text envs, ``samples.jsonl``: one record per final-evaluation episode, :mod:`envs.text`):
  the first few prompts, responses and true rewards, in place of the videos.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Samples shown per group, and characters per prompt or response.
SAMPLES, SAMPLE_CHARS = 3, 600


def rel(path: str | Path, start: Path) -> str:
    """``path`` relative to ``start``, with forward slashes (a link that works wherever both are moved together)."""
    return Path(os.path.relpath(Path(path).resolve(), start.resolve())).as_posix()


def png_html(png: bytes, alt: str) -> str:
    """An ``<img>`` holding ``png`` inline (base64), so the page needs no other file."""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def gantt_png(schedule: Mapping[str, Any], width: int = 512, height: int = 288) -> bytes:
    """PNG of a job-shop schedule as the runner stores it (:func:`envs.jobshop.schedule.schedule_json`).

    Args:
        schedule: ``{"instance", "makespan", "operations": [{"job", "index", "machine", "start", "duration"}]}``.
        width: Chart width in pixels.
        height: Chart height in pixels.

    Returns:
        The PNG bytes of a ``(height, width, 3)`` chart.
    """
    from PIL import Image

    from envs.jobshop.gantt import draw_gantt
    from envs.jobshop.instance import JobShopInstance
    from envs.jobshop.schedule import schedule_from_json

    start, durations, machines = schedule_from_json(dict(schedule))
    instance = JobShopInstance(str(schedule.get("instance", "schedule")), durations, machines)
    frame = draw_gantt(instance, start, 1.04 * float(schedule["makespan"]), width, height)
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def _schedule_file(run: Mapping[str, Any]) -> Path | None:
    """The first (by name) of a run's final-evaluation schedules (``schedules/*.json``), or ``None``."""
    found = sorted((Path(run["run"]) / "schedules").glob("*.json"))
    return found[0] if found else None


def read_samples(run_dir: Path, n: int = SAMPLES) -> list[dict[str, Any]]:
    """The first ``n`` records of a run's ``samples.jsonl`` (none when it has no such file)."""
    path = Path(run_dir) / "samples.jsonl"
    if not path.exists():
        return []
    records = []
    with path.open() as handle:
        for line in handle:
            if line.strip():
                records.append(json.loads(line))
            if len(records) == n:
                break
    return records


def _clip(text: Any) -> str:
    text = "" if text is None else str(text)
    return text if len(text) <= SAMPLE_CHARS else text[:SAMPLE_CHARS] + " [...]"


def media_section(runs: Sequence[Mapping[str, Any]], out: Path, prefix: str) -> tuple[list[str], list[str]]:
    """A group's Gantt charts, and its samples or else its videos (module docstring).

    Args:
        runs: The group's run summaries (with their ``run`` directory and ``seed``), in seed order.
        out: The report's directory (figures go to ``out/report_files/``).
        prefix: File-name prefix of the group's figures (unique in the report).

    Returns:
        ``(markdown lines, HTML parts)``.
    """
    md: list[str] = []
    body: list[str] = []
    charts = [(r, f) for r in runs if (f := _schedule_file(r)) is not None]
    if charts:
        md += ["", "Gantt charts of the final schedules (one per run: the first of its `schedules/` by name):", ""]
        body.append(
            "<p>Gantt charts of the final schedules (one per run: the first of its schedules/ by name):</p><div>"
        )
        for r, path in charts:
            png = gantt_png(json.loads(path.read_text()))
            name = f"{prefix}_gantt_s{r['seed']}.png"
            (out / "report_files" / name).write_bytes(png)
            md.append(f"![gantt s{r['seed']}](report_files/{name}) ([s{r['seed']}: {path.name}]({rel(path, out)}))")
            body.append(png_html(png, f"Gantt chart, seed {r['seed']}"))
        body.append("</div>")
    samples = [(r, s) for r in runs for s in read_samples(Path(r["run"]))][:SAMPLES]
    if samples:
        md += ["", f"Samples of the final policies (first {len(samples)} of the runs' `samples.jsonl`):", ""]
        body.append(f"<p>Samples of the final policies (first {len(samples)} of the runs' samples.jsonl):</p>")
        body.append("<table><tr><th>run</th><th>prompt</th><th>response</th><th>true reward</th></tr>")
        for r, s in samples:
            reward = "-" if s.get("true_reward") is None else f"{float(s['true_reward']):+.3f}"
            prompt, response = html.escape(_clip(s.get("prompt"))), html.escape(_clip(s.get("response")) or "(empty)")
            md.append(f"- **s{r['seed']}** (true reward {reward}): prompt: {' '.join(prompt.split())}"
                      f" | response: {' '.join(response.split())}")  # fmt: skip
            body.append(f'<tr><td>s{r["seed"]}</td><td class="text">{prompt}</td>'
                        f'<td class="text">{response}</td><td>{reward}</td></tr>')  # fmt: skip
        body.append("</table>")
        return md, body  # the samples stand in for the videos
    videos = [(r, v) for r in runs for v in r.get("videos") or []]
    md += ["", "Videos: " + (", ".join(f"[s{r['seed']}]({rel(Path(r['run']) / v, out)})" for r, v in videos) or "none")]
    body.append("<p>Videos of the final policies (relative links to the run directories):</p><div>")
    body += [f'<video controls muted width="240" src="{html.escape(rel(Path(r["run"]) / v, out))}" '
             f'title="seed {r["seed"]}"></video>' for r, v in videos]  # fmt: skip
    body.append("</div>")
    return md, body
