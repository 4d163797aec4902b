"""Pictures of a run: ``curves.png`` (true and proxy return over training) and text drawn on video frames.

:func:`plot_curves` reads a run's ``metrics.csv`` and draws the true return (mean ± std over the
evaluation episodes) and the proxy return against steps, each on its own axis (a learned or
written reward has its own scale; what matters is whether they rise and fall together: reward
hacking is proxy up while true goes down), and the success rate where the env defines one.
:func:`annotate` writes a line of text (step, returns) onto a frame for videos.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np


def _column(rows: list[dict[str, str]], name: str) -> np.ndarray:
    return np.array([float(r[name]) if r.get(name) not in (None, "") else np.nan for r in rows], dtype=np.float64)


def read_metrics(metrics_csv: Path) -> dict[str, np.ndarray]:
    """A run's ``metrics.csv`` as ``{column: (rows,) float64}`` (empty cells NaN); ``{}`` when it has no rows.

    Args:
        metrics_csv: The CSV (``step``, ``true_return``, ``proxy_return``, ``wall_time``, ``component/<name>`` ...).
    """
    if not Path(metrics_csv).exists():
        return {}
    with Path(metrics_csv).open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("step") not in (None, "")]
    if not rows:
        return {}
    out = {}
    for name in rows[0]:
        try:
            out[name] = _column(rows, name)
        except ValueError:  # a text column
            continue
    return out


def plot_curves(metrics_csv: Path, out: Path, title: str = "") -> Path | None:
    """Draw ``curves.png`` from a run's ``metrics.csv`` (written atomically); ``None`` when there is nothing to draw.

    Args:
        metrics_csv: The run's ``metrics.csv`` (``step``, ``true_return``, ``true_return_std``,
            ``proxy_return``, ``success`` ...).
        out: The PNG to write.
        title: Shown above the plot (e.g. ``env / reward / agent, seed``).

    Returns:
        ``out``, or ``None`` when the CSV has no evaluation rows yet.
    """
    m = read_metrics(metrics_csv)
    if not m:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    step = m["step"]
    nan = np.full(len(step), np.nan)
    true, true_std, proxy = m.get("true_return", nan), m.get("true_return_std", nan), m.get("proxy_return", nan)
    success = m.get("success", nan)
    has_success = bool(np.isfinite(success).any())
    fig, axes = plt.subplots(
        2 if has_success else 1, 1, figsize=(7, 5.2 if has_success else 3.6), sharex=True, squeeze=False
    )
    ax = axes[0, 0]
    ax.plot(step, true, color="tab:blue", marker="o", ms=3, label="true return")
    ax.fill_between(step, true - np.nan_to_num(true_std), true + np.nan_to_num(true_std), color="tab:blue", alpha=0.15)
    ax.set_ylabel("true return", color="tab:blue")
    twin = ax.twinx()
    twin.plot(step, proxy, color="tab:orange", marker="s", ms=3, ls="--", label="proxy return")
    twin.set_ylabel("proxy return", color="tab:orange")
    ax.grid(alpha=0.3)
    lines = ax.get_lines()[:1] + twin.get_lines()[:1]
    ax.legend(lines, [str(line.get_label()) for line in lines], loc="best", fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    if has_success:
        axes[1, 0].plot(step, success, color="tab:green", marker="o", ms=3)
        axes[1, 0].set_ylabel("success rate")
        axes[1, 0].set_ylim(-0.05, 1.05)
        axes[1, 0].grid(alpha=0.3)
    axes[-1, 0].set_xlabel("step")
    fig.tight_layout()
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, out)
    return out


def annotate(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` (``(H, W, 3)`` uint8) with ``text`` written in its top-left corner on a dark band."""
    from PIL import Image, ImageDraw

    image = Image.fromarray(np.ascontiguousarray(frame))
    draw = ImageDraw.Draw(image)
    _, _, right, bottom = draw.textbbox((4, 3), text)
    draw.rectangle((0, 0, min(right + 4, image.width), bottom + 3), fill=(0, 0, 0))
    draw.text((4, 3), text, fill=(255, 255, 255))
    return np.asarray(image)
