"""reward=clip: VLM-RM's projection, tensor preprocessing, weight loading, batching, the CLIP teacher."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

open_clip = pytest.importorskip("open_clip")
torch = pytest.importorskip("torch")

from envs.errors import ConfigError  # noqa: E402
from rewards import clip  # noqa: E402
from rewards.base import TransitionBatch  # noqa: E402

TINY = dict(model="rewardlab-tiny", pretrained=None, device="cpu")


def _frames(n: int, h: int = 96, w: int = 144, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("alpha", [0.0, 0.25, 1.0])
def test_projection_matches_the_formula(alpha: float) -> None:
    g = torch.Generator().manual_seed(0)

    def unit(*s: int) -> torch.Tensor:
        return torch.nn.functional.normalize(torch.randn(*s, generator=g, dtype=torch.float64), dim=-1)

    x, goal, base = unit(7, 16), unit(16), unit(16)
    d = (goal - base)[:, None]
    P = alpha * (d @ d.T) / (d.T @ d) + (1 - alpha) * torch.eye(16, dtype=torch.float64)
    direct = 1 - 0.5 * ((x - goal) @ P.T).pow(2).sum(-1)
    torch.testing.assert_close(clip.vlm_rm_reward(x, goal, base, alpha), direct.float(), rtol=1e-5, atol=1e-6)
    # without a baseline: 1 - |x - g|^2 / 2, the cosine similarity of unit vectors
    torch.testing.assert_close(clip.vlm_rm_reward(x, goal, None, alpha), (x @ goal).float(), rtol=1e-5, atol=1e-6)


def test_tensor_preprocessing_matches_open_clips_pil_transform() -> None:
    from PIL import Image

    scorer = clip.ClipScorer(goal="a pole", **TINY)
    _, _, pil_transform = open_clip.create_model_and_transforms("rewardlab-tiny", pretrained=None)
    frames = _frames(4)
    expected = torch.stack([pil_transform(Image.fromarray(f)) for f in frames])
    got = scorer.preprocess(frames)
    assert got.shape == expected.shape == (4, 3, 64, 64)
    assert (got - expected).abs().mean() < 0.01  # PIL's and torch's antialiased bicubic differ slightly
    squash = clip.ClipScorer(goal="a pole", resize="squash", **TINY).preprocess(frames)
    assert squash.shape == (4, 3, 64, 64) and not torch.allclose(squash, got)


def test_scores_are_batched_and_chunk_independent() -> None:
    frames = _frames(10)
    torch.manual_seed(0)  # the same random weights for both
    whole = clip.ClipScorer(goal=["a pole", "an upright pole"], baseline="a cart", alpha=0.5, batch_size=256, **TINY)
    torch.manual_seed(0)
    chunked = clip.ClipScorer(goal=["a pole", "an upright pole"], baseline="a cart", alpha=0.5, batch_size=3, **TINY)
    a, b = whole.score(frames), chunked.score(frames)
    assert a.shape == (10,) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_allclose(a, b, atol=1e-5)
    one_by_one = np.concatenate([whole.score(frames[i : i + 1]) for i in range(10)])
    np.testing.assert_allclose(a, one_by_one, atol=1e-5)


def test_checkpoint_round_trip_and_mismatch(tmp_path: Path) -> None:
    torch.manual_seed(3)
    reference = open_clip.create_model("rewardlab-tiny", pretrained=None)
    path = tmp_path / "tiny.pt"
    torch.save(reference.state_dict(), path)
    scorer = clip.ClipScorer(model="rewardlab-tiny", checkpoint=str(path), goal="a pole", device="cpu")
    frames = _frames(3)
    with torch.no_grad():
        expected = reference.eval().encode_image(scorer.preprocess(frames), normalize=True)
    torch.testing.assert_close(scorer.embed_frames(frames), expected)
    with pytest.raises(ConfigError, match="cannot load weights into RN50"):
        clip.ClipScorer(model="RN50", checkpoint=str(path), goal="a pole", device="cpu")


def test_loading_errors_speak_to_the_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not an open_clip architecture"):
        clip.load_clip("ViT-Nope")
    with pytest.raises(ConfigError, match=r"is not a pretrained tag of ViT-B-32; its tags: .*laion2b_s34b_b79k"):
        clip.load_clip("ViT-B-32", pretrained="imagenet")
    with pytest.raises(ConfigError, match="no such file"):
        clip.load_clip("rewardlab-tiny", checkpoint=str(tmp_path / "missing.pt"))
    monkeypatch.setattr(clip, "_cached_pretrained", lambda *a: None)
    monkeypatch.setattr(clip, "_hub_reachable", lambda *a: False)
    with pytest.raises(ConfigError, match=r"not cached here and the model hub cannot be reached.*reward\.checkpoint=PATH"):
        clip.load_clip("ViT-B-32", pretrained="laion2b_s34b_b79k")
    with pytest.raises(ConfigError, match=r"needs reward\.goal"):
        clip.ClipScorer(**TINY)
    with pytest.raises(ConfigError, match=r"reward\.alpha=2"):
        clip.ClipScorer(goal="x", alpha=2, **TINY)


def test_provider_scores_the_frames_in_the_batch() -> None:
    provider = clip.ClipReward(goal="pole upright", **TINY)
    assert "frame" in provider.needs and provider.state_only
    frames = _frames(4)
    batch = TransitionBatch(obs=np.zeros((4, 4)), action=np.zeros(4), next_obs=np.zeros((4, 4)), env_reward=np.ones(4, np.float32),
                            terminated=np.zeros(4, bool), truncated=np.zeros(4, bool), extras={"frame": frames})
    np.testing.assert_allclose(provider.reward(batch), provider.scorer.score(frames))
    with pytest.raises(ConfigError, match="without frames"):
        provider.reward(TransitionBatch(**{**batch.__dict__, "extras": {}}))


def test_teacher_labels() -> None:
    teacher = clip.ClipTeacher(goal="pole upright", **TINY)
    a, b = _frames(5, seed=1), _frames(5, seed=2)
    labels = teacher.label(a, b)
    assert set(np.unique(labels)) <= {0.0, 1.0}
    np.testing.assert_array_equal(teacher.label(b, a), 1.0 - labels)
    np.testing.assert_array_equal(teacher.label(a, a), np.full(5, 0.5))
    clips_a, clips_b = a.reshape(5, 1, *a.shape[1:]), np.stack([b, a], axis=1)  # (pairs, T, H, W, 3)
    mean_b = (teacher.clip_scores(b) + teacher.clip_scores(a)) / 2
    np.testing.assert_allclose(teacher.clip_scores(clips_b), mean_b, atol=1e-6)
    np.testing.assert_array_equal(teacher.label(np.stack([a, a], 1), clips_b), np.where(mean_b > teacher.clip_scores(a), 1.0, 0.0))
    assert clips_a.shape[1] == 1


def test_cartpole_clip_run_logs_true_and_proxy(run_cli, tmp_path: Path) -> None:
    run = tmp_path / "clip"
    args = ["env=cartpole", "reward=clip", "reward.model=rewardlab-tiny", "reward.pretrained=null", "reward.goal=pole upright",
            "agent=ppo", "steps=512", "eval.every=512", "eval.episodes=2", "eval.final_episodes=2", "env.max_episode_steps=60",
            "video.final_episodes=0", f"hydra.run.dir={run}"]
    proc = run_cli("run.py", args)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["reward"] == "clip"
    # CLIP rewards lie in (0, 1] per step while the env pays 1 per step: the proxy differs from the true return
    assert 0 < summary["proxy_return_mean"] < summary["true_return_mean"]
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"true_return", "proxy_return"} <= set(header)


def test_clip_reward_eval_uses_the_state_only_path(run_cli, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    args = ["env=cartpole", "env.sutton_barto_reward=true", "reward=clip", "reward.model=rewardlab-tiny", "reward.pretrained=null",
            "reward.goal=pole upright", "samples=120", "env.render.width=96", "env.render.height=64", f"out={out}"]
    proc = run_cli("reward_eval.py", args)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "reward_eval.json").read_text())
    assert result["epic_distance"] is not None and 0.0 <= result["epic_distance"] <= 1.0
