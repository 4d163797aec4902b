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
open_clip.add_model_config(clip.CONFIG_DIR)  # rewardlab-tiny for open_clip's own calls below, whatever runs first


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


def test_prompt_lists_are_averaged_as_vlmrm_does() -> None:
    """Goal and baseline lists: the mean of unit-norm text embeddings, not re-normalised (vlmrm's CLIPReward)."""
    goals, baselines = ["a pole", "an upright pole on a cart", "balance"], ["a cart", "nothing at all"]
    torch.manual_seed(0)
    scorer = clip.ClipScorer(goal=goals, baseline=baselines, alpha=0.5, **TINY)
    frames = _frames(6)
    x = scorer.embed_frames(frames)

    # vlmrm/reward_model.py, transcribed: embed_prompts normalises each prompt; CLIPReward averages
    # (keepdim) and projects with direction^T direction / |direction|^2; forward: 1 - |(x - t) P|^2 / 2
    def embed_prompts(texts: list[str]) -> torch.Tensor:
        e = scorer.model.encode_text(scorer.tokenizer(texts)).float()
        return e / e.norm(dim=-1, keepdim=True)

    with torch.no_grad():
        target = embed_prompts(goals).mean(dim=0, keepdim=True)
        baseline = embed_prompts(baselines).mean(dim=0, keepdim=True)
    direction = target - baseline
    projection = 0.5 * (direction.T @ direction / torch.norm(direction) ** 2) + 0.5 * torch.eye(direction.shape[1])
    expected = 1 - torch.norm((x - target) @ projection, dim=-1) ** 2 / 2
    assert float(target.norm()) < 0.9  # several prompts: the mean is well inside the unit sphere
    torch.testing.assert_close(scorer.goal, target[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scorer.score(frames), expected.numpy(), rtol=1e-5, atol=1e-5)


def _scenes(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    """Frames with structure (stripes, a checkerboard, noise): resizing errors show, unlike in pure noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for _ in range(n):
        f, ph = rng.uniform(3, 12, 3), rng.uniform(0, 6, 3)
        img = np.stack([128 + 100 * np.sin(xx / f[0] + ph[0]), 128 + 100 * np.cos(yy / f[1] + ph[1]),
                        128 + 100 * np.sin((xx + yy) / f[2] + ph[2])], -1)
        img[(xx // 16 + yy // 16) % 2 == 0] *= 0.4
        out.append(np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


def _reference(frames: np.ndarray, transform) -> torch.Tensor:
    """open_clip's own (PIL) inference transform, frame by frame."""
    from PIL import Image

    return torch.stack([transform(Image.fromarray(f)) for f in frames])


def _level_error(got: torch.Tensor, expected: torch.Tensor, std) -> float:
    """Mean absolute difference in uint8 levels (undoing the normalisation's 1 / (255 std))."""
    return float(((got - expected).abs() * torch.tensor(std).view(1, 3, 1, 1) * 255).mean())


def _tag_cfg(model: str, tag: str) -> dict:
    cfg = open_clip.get_pretrained_cfg(model, tag)
    return {"mean": tuple(cfg.get("mean") or open_clip.OPENAI_DATASET_MEAN), "std": tuple(cfg.get("std") or open_clip.OPENAI_DATASET_STD),
            "interpolation": cfg.get("interpolation") or "bicubic", "resize_mode": cfg.get("resize_mode") or "shortest"}


KEYS = ("mean", "std", "interpolation", "resize_mode")


def test_preprocessing_config_follows_every_pretrained_tag() -> None:
    pairs = open_clip.list_pretrained()
    assert len(pairs) > 100
    kinds = set()
    for model, tag in pairs:
        cfg = clip.preprocess_config(model, tag, {"size": 224})
        expected = _tag_cfg(model, tag)
        assert {k: cfg[k] for k in KEYS} == {k: tuple(v) if k in ("mean", "std") else v for k, v in expected.items()}, (model, tag)
        assert cfg["size"] == (224, 224)  # the vision tower's, never the tag's
        kinds.add(tuple(cfg[k] for k in KEYS))
    assert len(kinds) >= 8  # OpenAI / 0.5 / ImageNet / 0-1 statistics, squash and shortest, bicubic and bilinear
    # no tag: the model's own preprocessing config, as open_clip builds it
    scorer = clip.ClipScorer(goal="a pole", **TINY)
    own = scorer.model.visual.preprocess_cfg
    assert {k: scorer.preprocess_cfg[k] for k in KEYS} == {k: tuple(own[k]) if k in ("mean", "std") else own[k] for k in KEYS}


# one tag for each kind of preprocessing open_clip's tags use (resize mode, interpolation, statistics)
TAG_KINDS = [
    ("ViT-B-32", "laion2b_s34b_b79k"),  # shortest side + centre crop, bicubic, OpenAI mean/std
    ("ViT-L-14", "laion2b_s32b_b82k"),  # shortest, bicubic, mean/std 0.5
    ("ViT-H-14", "dfn5b"),  # squash, bicubic, OpenAI
    ("ViT-B-16-SigLIP", "webli"),  # squash, bicubic, 0.5
    ("ViT-L-14-CLIPA", "datacomp1b"),  # squash, bilinear, ImageNet mean/std
    ("MobileCLIP-S1", "datacompdr"),  # shortest, bilinear, mean 0 / std 1
    ("MobileCLIP2-S3", "dfndr2b"),  # shortest, bilinear, OpenAI
    ("PE-Core-T-16-384", "meta"),  # squash, bilinear, 0.5, 384 px
]


@pytest.mark.parametrize(("model", "tag"), TAG_KINDS)
def test_tensor_preprocessing_matches_open_clips_transform_for_each_kind_of_tag(model: str, tag: str) -> None:
    size = open_clip.get_model_config(model)["vision_cfg"]["image_size"]
    cfg = clip.preprocess_config(model, tag, {"size": size})
    ours = clip.FramePreprocess(cfg)
    theirs = open_clip.image_transform(cfg["size"], is_train=False, **_tag_cfg(model, tag))
    for h, w in ((96, 144), (300, 200)):  # upscaled and downscaled, landscape and portrait
        frames = _scenes(3, h, w, seed=h)
        got, expected = ours(frames), _reference(frames, theirs)
        assert got.shape == expected.shape == (3, 3, *cfg["size"])
        # PIL's and torch's antialiased kernels differ by rounding: well under one uint8 level on average
        assert _level_error(got, expected, cfg["std"]) < 0.3, (model, tag, h, w)


@pytest.mark.parametrize("resize", ["shortest", "longest", "squash"])
@pytest.mark.parametrize("size", [(64, 64), (48, 80)])
def test_resize_override_matches_open_clips_transform(resize: str, size: tuple[int, int]) -> None:
    cfg = {**clip.preprocess_config("rewardlab-tiny", None, {"size": size}), "resize_mode": resize, "fill_color": 7}
    theirs = open_clip.image_transform(size, is_train=False, resize_mode=resize, fill_color=7)
    for h, w in ((96, 144), (300, 200)):
        frames = _scenes(2, h, w, seed=w)
        got, expected = clip.FramePreprocess(cfg)(frames), _reference(frames, theirs)
        assert got.shape == expected.shape == (2, 3, *size)
        assert _level_error(got, expected, cfg["std"]) < 0.3, (resize, size, h, w)


def _untrained_scorer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model: str, tag: str) -> clip.ClipScorer:
    """A scorer for ``model`` with untrained weights and the preprocessing of ``tag``.

    The real loading path with a checkpoint whose weights are not read (no weights here), and
    a stand-in tokenizer (some tags' tokenizers come from the model hub; text is not under test).
    """
    monkeypatch.setattr(open_clip, "load_checkpoint", lambda net, path, **kw: None)
    context = open_clip.get_model_config(model)["text_cfg"].get("context_length", 77)
    monkeypatch.setattr(open_clip, "get_tokenizer", lambda name, **kw: lambda texts: torch.zeros(len(texts), context, dtype=torch.long))
    weights = tmp_path / "untrained.pt"
    weights.touch()
    torch.manual_seed(0)
    return clip.ClipScorer(model=model, pretrained=tag, checkpoint=str(weights), goal="a pole", device="cpu")


@pytest.mark.parametrize(
    ("model", "tag"),
    # the small ones in the default run (squash with mean/std 0.5, bicubic and bilinear), the large ones slow
    [("PE-Core-T-16-384", "meta"), ("ViT-B-16-SigLIP", "webli")]
    + [pytest.param(m, t, marks=pytest.mark.slow) for m, t in TAG_KINDS[1:6] if m != "ViT-B-16-SigLIP"],
)
def test_embeddings_match_open_clips_transform_per_tag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model: str, tag: str) -> None:
    scorer = _untrained_scorer(monkeypatch, tmp_path, model, tag)
    assert {k: scorer.preprocess_cfg[k] for k in KEYS} == {k: tuple(v) if k in ("mean", "std") else v for k, v in _tag_cfg(model, tag).items()}
    theirs = open_clip.image_transform(scorer.size, is_train=False, **_tag_cfg(model, tag))
    frames = _scenes(2, 120, 180)
    with torch.inference_mode():
        expected = scorer.model.encode_image(_reference(frames, theirs), normalize=True)
    got = scorer.embed_frames(frames)
    assert (got * expected).sum(-1).min() >= 0.999


def test_checkpoint_with_a_tag_of_another_model_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.pt"
    path.touch()
    with pytest.raises(ConfigError, match=r"not a pretrained tag of rewardlab-tiny \(with reward\.checkpoint, reward\.pretrained names"):
        clip.load_clip("rewardlab-tiny", pretrained="laion2b_s34b_b79k", checkpoint=str(path))


def test_tensor_preprocessing_matches_open_clips_pil_transform() -> None:
    frames = _frames(4)
    for resize in (None, "squash", "longest"):  # no tag: the model's own config, or an override of its resize mode
        _, _, pil_transform = open_clip.create_model_and_transforms("rewardlab-tiny", pretrained=None, image_resize_mode=resize)
        scorer = clip.ClipScorer(goal="a pole", resize=resize, **TINY)
        got, expected = scorer.preprocess(frames), _reference(frames, pil_transform)
        assert got.shape == expected.shape == (4, 3, 64, 64)
        assert _level_error(got, expected, scorer.preprocess_cfg["std"]) < 0.3
    with pytest.raises(ConfigError, match=r"reward\.resize='crop' is not one of null"):
        clip.ClipScorer(goal="a pole", resize="crop", **TINY)


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
    def offline(name: str, **kw: object) -> None:
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(open_clip, "get_tokenizer", offline)
    with pytest.raises(ConfigError, match=r"the tokenizer of rewardlab-tiny comes from the model hub and is not cached here"):
        clip.load_clip("rewardlab-tiny")


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


@pytest.mark.heavy
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
            "reward.goal=pole upright", "samples=120", "epic.transitions=120", "env.render.width=96", "env.render.height=64", f"out={out}"]
    proc = run_cli("reward_eval.py", args)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "reward_eval.json").read_text())
    saved = np.load(out / "reward_eval_samples.npz")
    idx = saved["epic_index"]
    true, proxy = saved["true_reward"][idx], saved["proxy_reward"][idx]
    assert len(idx) == 120 and true.std() > 0 and proxy.std() > 0
    # Both rewards depend on the next state only (the frame after the step; Sutton & Barto's -1 on
    # failure), so canonicalisation subtracts constants and EPIC is the Pearson distance of the
    # rewards themselves, frame for frame: a misaligned frame or a frame of the wrong state shows.
    expected = np.sqrt((1.0 - np.corrcoef(true, proxy)[0, 1]) / 2.0)
    assert result["epic_distance"] == pytest.approx(expected, abs=1e-4)
