"""Pictures a run writes: curves.png, annotated videos that last long enough to watch (issue 19, item 7)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.evaluation import record_video
from experiments.plots import annotate, plot_curves

HOPPER = {"name": "hopper", "id": "rewardlab/Hopper-v5", "render": {"width": 64, "height": 64}}


class _Random:
    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        return self.rng.uniform(-1, 1, size=(len(obs), 3)).astype(np.float32)


def test_curves_png_from_metrics_csv(tmp_path: Path) -> None:
    csv = tmp_path / "metrics.csv"
    csv.write_text("step,true_return,true_return_std,proxy_return,success\n")
    assert plot_curves(csv, tmp_path / "curves.png") is None  # nothing evaluated yet
    csv.write_text(
        "step,true_return,true_return_std,proxy_return,success\n0,1,0.5,10,0\n100,5,1,40,0.5\n200,9,1,80,1\n"
    )
    out = plot_curves(csv, tmp_path / "curves.png", "cartpole / fn / ppo, seed 0")
    assert out is not None and out.stat().st_size > 5000 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_short_episodes_give_a_clip_of_the_minimum_length_with_text_on_it(tmp_path: Path) -> None:
    """A random hopper falls in ~20 steps (0.16 s at 125 fps): episodes are added until 1 s of video."""
    import imageio.v2 as imageio

    info = record_video(_Random(), HOPPER, tmp_path / "v.mp4", seed=3, max_frames=1000, min_seconds=1.0)
    reader = imageio.get_reader(str(tmp_path / "v.mp4"))
    fps = reader.get_meta_data()["fps"]
    assert info["episodes"] >= 2 and info["frames"] / fps >= 1.0 and info["length"] < info["frames"]
    one = record_video(_Random(), HOPPER, tmp_path / "one.mp4", seed=3, max_frames=1000, overlay=False)
    assert one["episodes"] == 1 and one["length"] == info["length"]  # the first episode is the same
    frame = np.zeros((64, 64, 3), dtype=np.uint8)
    marked = annotate(frame, "episode 0  step 3  true 1.0")
    assert marked[:12].any() and not marked[20:].any()  # text in a band at the top, the rest untouched


def test_reward_eval_png_shows_its_figures(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import matplotlib.figure

    from experiments import reward_eval

    titles: list[str] = []
    save = matplotlib.figure.Figure.savefig

    def keep_titles(fig, *args, **kwargs):  # type: ignore[no-untyped-def]
        titles.extend(ax.get_title() for ax in fig.axes)
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep_titles)
    rng = np.random.default_rng(0)
    true = rng.normal(size=200)
    result = {"pearson": 0.87654, "spearman": None, "epic_distance": 0.25}
    reward_eval._plot(tmp_path / "r.png", true, true + 0.1, (true, true), "pendulum: fn vs true", result)
    assert titles == [
        "per transition: Pearson 0.877, Spearman undefined",
        "EPIC canonicalisation: EPIC distance 0.250",
    ]
    assert (tmp_path / "r.png").stat().st_size > 5000
