"""Gantt charts of (partial) job-shop schedules as ``(height, width, 3)`` uint8 frames."""

from __future__ import annotations

import colorsys

import numpy as np

from envs.jobshop.instance import JobShopInstance

BACKGROUND, GRID, TEXT, MARK = (255, 255, 255), (215, 215, 215), (40, 40, 40), (200, 30, 30)


def job_colours(n_jobs: int) -> np.ndarray:
    """``(n_jobs, 3)`` uint8 colours, well apart for neighbouring job numbers (golden-ratio hues)."""
    hues = (np.arange(n_jobs) * 0.618033988749895) % 1.0
    return np.array([[round(255 * c) for c in colorsys.hsv_to_rgb(h, 0.55, 0.92)] for h in hues], dtype=np.uint8)


def draw_gantt(instance: JobShopInstance, start: np.ndarray, horizon: float, width: int, height: int) -> np.ndarray:
    """Draw the scheduled operations (``start >= 0``) of an instance.

    Args:
        instance: The instance.
        start: ``(n_jobs, n_ops)`` start times, -1 for unscheduled operations.
        horizon: Time shown at the right edge.
        width: Frame width in pixels.
        height: Frame height in pixels.

    Returns:
        ``(height, width, 3)`` uint8 frame: one row per machine, one colour per job, the current
        makespan as a red line, a title with the instance, makespan and best-known makespan.
    """
    from PIL import Image, ImageDraw

    frame = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    n_machines = instance.n_machines
    top, left, right, bottom = 14, 28, 6, 4
    plot_w, plot_h = max(1, width - left - right), max(1, height - top - bottom)
    row_h = plot_h / n_machines
    colours = job_colours(instance.n_jobs)
    scale = plot_w / max(horizon, 1e-9)
    jobs, ops = np.nonzero(start >= 0)
    for j, k in zip(jobs.tolist(), ops.tolist(), strict=True):
        machine = int(instance.machines[j, k])
        x0 = left + int(start[j, k] * scale)
        x1 = left + max(int((start[j, k] + instance.durations[j, k]) * scale), int(start[j, k] * scale) + 1)
        y0 = top + int(machine * row_h) + 1
        y1 = top + max(int((machine + 1) * row_h) - 1, int(machine * row_h) + 2)
        frame[y0:y1, x0 : min(x1, width - right)] = colours[j]
        if x1 - x0 > 2:
            frame[y0:y1, x0] = (frame[y0:y1, x0] * 0.6).astype(np.uint8)  # edge between neighbours
    for machine in range(n_machines + 1):
        y = min(top + int(machine * row_h), height - 1)
        frame[y, left:] = GRID
    makespan = int((start + instance.durations)[start >= 0].max()) if (start >= 0).any() else 0
    x = left + int(makespan * scale)
    if makespan and x < width:
        frame[top:, x] = MARK
    image = Image.fromarray(frame)
    draw = ImageDraw.Draw(image)
    best = f"  best known {instance.best_known}" if instance.best_known else ""
    done = int((start >= 0).sum())
    draw.text((2, 1), f"{instance.name}  {done}/{start.size} ops  makespan {makespan}{best}", fill=TEXT)
    if row_h >= 9:
        for machine in range(n_machines):
            draw.text((2, top + int(machine * row_h + row_h / 2) - 5), f"M{machine}", fill=TEXT)
    return np.asarray(image)
