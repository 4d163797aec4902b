"""Preferences over frames: the CNN reward model, frame memory, and the CLIP teacher."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from agents.sb3 import SB3Agent
from envs.errors import ConfigError
from rewards.preference.model import CnnRewardModel, RewardEnsemble, shrink_frames, train_reward_model
from rewards.preference.provider import PreferenceReward
from rewards.preference.segments import EQUAL, LEFT, RIGHT, PreferencePairs, Segments
from rewards.preference.teachers import SyntheticTeacher, VlmTeacher
from tests.helpers import csv_rows, reward_venv

SIZE = 40


def _frames(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(..., SIZE, SIZE, 3)`` frames: a bright 6-pixel square at column ``x`` (in [0, 1]) on noise."""
    lead = x.shape
    f = rng.integers(0, 60, size=(*lead, SIZE, SIZE, 3), dtype=np.uint8)
    col = np.rint(x * (SIZE - 6)).astype(np.int64)
    flat, cols = f.reshape(-1, SIZE, SIZE, 3), col.reshape(-1)
    for i, c in enumerate(cols):
        flat[i, 17:23, c : c + 6] = 255
    return f


def _segments(n: int, h: int, rng: np.random.Generator) -> Segments:
    """Segments whose true reward is the square's position: only the pixels tell it."""
    x = rng.random((n, h))
    return Segments(
        obs=np.zeros((n, h, 1), np.float32),  # the state is in the picture only
        actions=np.zeros((n, h, 1), np.float32),
        next_obs=np.zeros((n, h, 1), np.float32),
        true_rewards=x.astype(np.float32),
        episode=np.zeros(n, np.int64),
        start=np.zeros(n, np.int64),
        frames=_frames(x, rng),
    )


def _pairs(n: int, seed: int) -> PreferencePairs:
    rng = np.random.default_rng(seed)
    left, right = _segments(n, 4, rng), _segments(n, 4, rng)
    return PreferencePairs(left, right, SyntheticTeacher().label(left, right, rng))


def test_shrink_frames_keeps_colours_and_shapes() -> None:
    f = np.zeros((3, 96, 128, 3), np.uint8)
    f[..., 0] = 200
    out = shrink_frames(f, 32)
    assert out.shape == (3, 32, 32, 3) and out.dtype == np.uint8
    assert np.all(out[..., 0] == 200) and np.all(out[..., 1:] == 0)
    assert shrink_frames(out, 32) is out  # already that size: untouched
    t = shrink_frames(torch.as_tensor(f), 32)
    assert torch.is_tensor(t) and tuple(t.shape) == (3, 32, 32, 3)


def test_cnn_reward_model_learns_what_only_the_pixels_show() -> None:
    torch.manual_seed(0)
    box = gym.spaces.Box(-1, 1, (1,), np.float32)
    model = RewardEnsemble(
        box, box, hidden=(32,), members=2, use_action=False, inputs="frames", frame_size=SIZE, channels=(8, 16, 16)
    )
    held_out = _pairs(200, 1)
    before = model.accuracy(held_out)
    fit = train_reward_model(model, _pairs(400, 0), torch.Generator().manual_seed(0), epochs=15, batch_size=32, lr=1e-3)
    after = model.accuracy(held_out)
    assert after > 0.85 and after > before + 0.2, (before, after, fit)
    # per-step rewards rank frames by the square's position
    rng = np.random.default_rng(2)
    x = np.linspace(0, 1, 50)
    r = model.predict(None, None, frames=_frames(x, rng))
    assert r.shape == (50,) and np.corrcoef(x, r)[0, 1] > 0.8
    with pytest.raises(ConfigError, match="needs frames"):
        model.predict(np.zeros((2, 1)), None)


def test_vlm_teacher_maps_clip_scores_to_labels() -> None:
    pytest.importorskip("open_clip")
    teacher = VlmTeacher(
        goal="a pole standing upright", model="rewardlab-tiny", pretrained=None, device="cpu", equal_margin=0.01
    )
    rng = np.random.default_rng(0)
    left, right = _segments(3, 2, rng), _segments(3, 2, rng)
    scores = {id(left.frames): np.array([0.5, 0.1, 0.3]), id(right.frames): np.array([0.2, 0.4, 0.305])}
    teacher.clip.clip_scores = lambda clips: scores[id(clips.base if clips.base is not None else clips)]  # type: ignore[method-assign]
    np.testing.assert_array_equal(teacher.label(left, right, rng), [LEFT, RIGHT, EQUAL])
    # and with the real (untrained, tiny) CLIP: one label per pair, from the frames
    teacher = VlmTeacher(
        goal="a pole standing upright", model="rewardlab-tiny", pretrained=None, device="cpu", stride=2
    )
    labels = teacher.label(left, right, rng)
    assert labels.shape == (3,) and set(labels.tolist()) <= {LEFT, RIGHT, EQUAL}
    with pytest.raises(ConfigError, match="goal"):
        VlmTeacher(goal=None)
    no_frames = Segments(left.obs, left.actions, left.next_obs, left.true_rewards, left.episode, left.start)
    with pytest.raises(ConfigError, match="frames"):
        teacher.label(no_frames, no_frames, rng)


@pytest.mark.heavy
@pytest.mark.parametrize(
    "extra",
    [
        ["reward/model=cnn", "reward.model.channels=[4,8,8]", "reward.model.hidden=[16]"],
        pytest.param(
            [
                "reward/teacher=clip",
                "reward.teacher.goal=a pole standing upright",
                "reward.teacher.model=rewardlab-tiny",
                "reward.teacher.pretrained=null",
                "reward.teacher.stride=5",
            ],
            marks=pytest.mark.slow,  # ~24 s; the CLIP teacher's labels are unit-tested in test_clip.py
        ),
    ],
    ids=["cnn", "clip-teacher"],
)
def test_online_preferences_over_frames(run_cli, tmp_path: Path, extra: list[str]) -> None:  # type: ignore[no-untyped-def]
    if "reward/teacher=clip" in extra:
        pytest.importorskip("open_clip")
    res = run_cli(
        "run.py",
        [
            "env=cartpole",
            "reward=preference",
            "agent=ppo",
            "steps=1024",
            "reward.budget=20",
            "reward.queries=10",
            "reward.every=400",
            "reward.first_after=400",
            "reward.held_out=50",
            "reward.epochs=5",
            "reward.frame_size=48",
            "env.max_episode_steps=100",  # every env renders frames for the model: keep episodes short
            "eval.every=512",
            "eval.episodes=2",
            "eval.final_episodes=2",
            "video.final_episodes=0",
            "hydra.run.dir=run",
            *extra,
        ],
    )
    assert res.returncode == 0, res.stderr[-3000:]
    pairs = PreferencePairs.load(tmp_path / "run" / "preferences.npz")
    assert len(pairs) == 20 and pairs.left.frames is not None
    assert pairs.left.frames.shape[1:] == (25, 48, 48, 3)  # kept shrunk to frame_size
    assert ("clip(" in pairs.teacher) == ("reward/teacher=clip" in extra)
    rows = csv_rows(tmp_path / "run" / "metrics.csv")
    assert float(rows[-1]["labels"]) == 20 and 0 <= float(rows[-1]["reward_model_accuracy_all"]) <= 1


@pytest.mark.slow  # ~12 s of rendering
def test_frames_kept_within_the_memory_budget() -> None:
    frame_bytes = 40 * 40 * 3
    provider = PreferenceReward(
        model=CnnRewardModel(), frame_size=40, frame_memory_mb=300 * frame_bytes / 2**20, every=10**9, first_after=10**9
    )
    venv = reward_venv("cartpole", provider, n=2, observe=True)
    venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(1500):
        venv.step(rng.integers(0, 2, size=2))
    kept = sum(len(e["frames"]) for e in provider._done)
    assert 0 < kept <= 300 and provider._frame_bytes == kept * frame_bytes
    assert all(e["frames"].shape[1:] == (40, 40, 3) for e in provider._done)
    venv.close()


def test_off_policy_agents_refuse_an_online_frame_reward() -> None:
    venv = reward_venv("pendulum", PreferenceReward(model=CnnRewardModel()), observe=True)
    with pytest.raises(ConfigError, match="on-policy"):
        SB3Agent("SAC", venv, reward=venv.provider, seed=0, device="cpu")
    venv.close()
    with pytest.raises(ConfigError, match=r"reward\.model"):
        PreferenceReward(model="transformer")


@pytest.mark.slow  # ~25 s: collect with frames, cut pairs, train a CNN offline
def test_offline_reward_model_on_frames_from_a_preference_file(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    from experiments import collect, prefs

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    data = "local/cartpole/frames-v0"
    collect.main(["env=cartpole", "policy=random", "episodes=8", "frames=true", f"name={data}"])
    with_frames = prefs.main([f"dataset={data}", "pairs=40", "segment=10", "name=px", "frames=true"])
    without = prefs.main([f"dataset={data}", "pairs=40", "segment=10", "name=plain"])
    assert PreferencePairs.load(with_frames["path"]).left.frames.shape[1] == 10
    common = ["env=cartpole", "agent=iql", f"dataset={data}", "reward=preference", "reward/model=cnn"]
    common += ["reward.epochs=3", "reward.frame_size=40", "steps=200", "eval.episodes=2", "eval.final_episodes=2"]
    common += ["video.final_episodes=0"]
    res = run_cli("run.py", [*common, f"reward.pairs={with_frames['path']}", "hydra.run.dir=run"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert (tmp_path / "run" / "summary.json").exists()
    res = run_cli("run.py", [*common, f"reward.pairs={without['path']}", "hydra.run.dir=run2"])
    assert res.returncode == 2 and "prefs.py frames=true" in res.stderr
