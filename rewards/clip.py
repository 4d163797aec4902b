"""``reward=clip``: zero-shot rewards from a CLIP vision-language model (VLM-RM), and a CLIP teacher.

VLM-RM (Rocamonde et al., 2023) scores a rendered frame by how close its CLIP embedding lies to
the embedding of a goal sentence. With unit-norm embeddings ``x`` (frame), ``g`` (goal) and ``b``
(baseline), ``d = g - b`` and the projection ``P = alpha * d d^T / |d|^2 + (1 - alpha) * I``::

    reward(x) = 1 - 1/2 * |P (x - g)|^2

``alpha = 1`` keeps only the goal-baseline direction, ``alpha = 0`` (or no baseline) gives
``1 - |x - g|^2 / 2 = cos(x, g)``. A list of sentences for the goal (or baseline) is the mean of
their unit-norm embeddings, *not* re-normalised, exactly as the authors' code (vlmrm's
``CLIPReward``: ``embed_prompts(...).mean(dim=0)``), so that rewards match theirs for the same
prompts. With one sentence nothing changes; with several, ``|g| < 1`` and, for ``alpha = 0``,
``reward = 1/2 + x.g - |g|^2 / 2``: still an increasing affine function of ``cos(x, g)``.

Pipeline, per vector-env step: the frames of all envs arrive as one ``(batch, H, W, 3)`` uint8
array (the wrapper stacks the envs' ``rgb_array`` renders), go to the model's device once, and are
preprocessed as tensors the way open_clip's own (PIL) inference transform does for the weights in
use, to a fraction of a uint8 level (PIL's and torch's antialiased kernels round differently).
Size, mean, std, resize mode (``shortest``: shortest side then a centre crop; ``squash``: the
whole frame; ``longest``: longest side then padding) and interpolation (bicubic or bilinear,
antialiased, rounded and clipped to uint8 levels as PIL does) are those of the pretrained tag
(``open_clip.get_pretrained_cfg(model, tag)`` over the model's own preprocessing config, as
``open_clip.create_model_and_transforms`` merges them; SigLIP squashes with mean/std 0.5, CLIPA
uses ImageNet statistics and bilinear resizing, ...). Frames are then encoded in chunks of
``batch_size`` under fp16/bf16 autocast on a GPU. Text embeddings are computed once at start-up.

Weights: ``model`` + ``pretrained`` (an open_clip tag such as ``laion2b_s34b_b79k``, or ``null``
for an untrained model), or ``checkpoint=PATH`` (a state dict or open_clip checkpoint file for
``model``). With a checkpoint, ``pretrained`` names the tag the weights came from, so that its
preprocessing is used (``null``: the model's default preprocessing). Where a tag's weights are not
cached and the model hub cannot be reached (as on rewardlab's CI machines), loading fails at once
with instructions for a local checkpoint. ``rewardlab-tiny`` (``rewards/clip_configs/``) is a small
untrained architecture for tests.

:class:`ClipTeacher` turns the same scores into preference labels between two frames or two
clips (RL-VLM-F's labelling idea with CLIP as the VLM), for preference learning.
"""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.parse
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from typing_extensions import override

from envs.errors import ConfigError
from rewards.base import RewardProvider, TransitionBatch

CONFIG_DIR = Path(__file__).resolve().parent / "clip_configs"
RESIZE_MODES = ("shortest", "longest", "squash")  # open_clip's inference resize modes
INTERPOLATIONS = ("bicubic", "bilinear")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
HUB_PROBE_TIMEOUT_S = 3.0


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as exc:
        raise ConfigError(
            f"reward=clip needs open_clip and torchvision ({exc}); install the extra: "
            "pip install torch==2.14.1 torchvision==0.29.1 && pip install -e '.[clip]' (see README.md)"
        ) from exc
    if str(CONFIG_DIR) not in {str(p) for p in open_clip.factory._MODEL_CONFIG_PATHS}:
        open_clip.add_model_config(CONFIG_DIR)
    return open_clip


def _hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether the model hub's host accepts a TCP connection (a fast check before a long retry loop)."""
    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except Exception:  # no hub client: open_clip downloads by URL
        return True
    host = urllib.parse.urlparse(endpoint).hostname or ""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _cached_pretrained(open_clip: Any, model: str, tag: str) -> str | None:
    """Local path of a tag's weights if they are already cached, else ``None``."""
    cfg = open_clip.get_pretrained_cfg(model, tag)
    if "file" in cfg:
        return cfg["file"]
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        if hub.endswith("/"):
            repo, filename = hub.rstrip("/"), "open_clip_pytorch_model.bin"
        else:
            repo, filename = os.path.split(hub)
        for name in (filename, filename.replace(".bin", ".safetensors")):
            path = try_to_load_from_cache(repo, name)
            if isinstance(path, str):
                return path
    url = cfg.get("url", "")
    if url:
        path = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if path.is_file():
            return str(path)
    return None


def preprocess_config(model: str, pretrained: str | None, base: Mapping[str, Any]) -> dict[str, Any]:
    """open_clip's inference preprocessing for ``model`` with the weights of tag ``pretrained``.

    As ``open_clip.create_model`` merges them: the model's own config ``base`` (its
    ``visual.preprocess_cfg``), overlaid with the entries the tag sets in
    ``open_clip.get_pretrained_cfg(model, pretrained)``; the size stays the vision tower's.

    Args:
        model: open_clip architecture name.
        pretrained: The tag the weights come from, or ``None`` (the model's own config alone).
        base: The model's preprocessing config (``size``, ``mean``, ``std``, ``interpolation``,
            ``resize_mode``, ``fill_color``; missing keys take open_clip's defaults).

    Returns:
        ``size`` ``(height, width)``, ``mean`` and ``std`` (3-tuples of floats), ``interpolation``
        (``bicubic`` | ``bilinear``), ``resize_mode`` (``shortest`` | ``longest`` | ``squash``) and
        ``fill_color`` (int, the padding of ``longest``).

    Raises:
        ConfigError: A mode or interpolation this module does not implement.
    """
    open_clip = _import_open_clip()
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    cfg = merge_preprocess_dict(PreprocessCfg(), dict(base))
    if pretrained:
        cfg = merge_preprocess_dict(cfg, open_clip.get_pretrained_cfg(model, pretrained) or {})
    size = base.get("size", cfg["size"])
    mean, std = cfg["mean"], cfg["std"]
    out = {
        "size": (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1])),
        "mean": tuple(float(m) for m in (mean if isinstance(mean, Sequence) else (mean,) * 3)),
        "std": tuple(float(v) for v in (std if isinstance(std, Sequence) else (std,) * 3)),
        # open_clip's inference transform treats "random" (a training option) as bicubic
        "interpolation": "bicubic" if cfg["interpolation"] == "random" else str(cfg["interpolation"]),
        "resize_mode": str(cfg["resize_mode"]),
        "fill_color": int(cfg.get("fill_color") or 0),
    }
    if out["interpolation"] not in INTERPOLATIONS or out["resize_mode"] not in RESIZE_MODES:
        raise ConfigError(
            f"{model} / {pretrained}: preprocessing {out['resize_mode']!r} / {out['interpolation']!r} is not supported "
            f"(resize modes: {', '.join(RESIZE_MODES)}; interpolations: {', '.join(INTERPOLATIONS)})"
        )
    return out


def load_clip(
    model: str,
    pretrained: str | None = None,
    checkpoint: str | None = None,
    device: str = "cpu",
) -> tuple[Any, Any, dict[str, Any]]:
    """Build an open_clip model in eval mode on ``device``, its tokenizer and its preprocessing config.

    Args:
        model: open_clip architecture name (``ViT-B-32``, ``ViT-L-14``, ``rewardlab-tiny`` ...).
        pretrained: open_clip pretrained tag (its weights, downloaded or cached, and its
            preprocessing), or ``None`` for random weights and the model's default preprocessing.
        checkpoint: Path of a weights file for ``model``; the weights are read from it instead of
            the tag's, and ``pretrained`` (if given) names the tag they came from (its preprocessing).
        device: Torch device string.

    Returns:
        ``(model, tokenizer, preprocess_cfg)`` with ``preprocess_cfg`` as :func:`preprocess_config`.

    Raises:
        ConfigError: Unknown model or tag, missing or mismatching checkpoint, weights not available offline.
    """
    open_clip = _import_open_clip()
    if model not in open_clip.list_models():
        raise ConfigError(
            f"reward.model={model!r} is not an open_clip architecture; e.g. ViT-B-32, ViT-B-16, ViT-L-14, "
            f"RN50, rewardlab-tiny (all: python -c 'import open_clip; print(open_clip.list_models())')"
        )
    if pretrained:
        tags = open_clip.list_pretrained_tags_by_model(model)
        if pretrained not in tags:
            with_checkpoint = (
                " (with reward.checkpoint, reward.pretrained names the tag the weights came from, for its "
                "preprocessing; null: the model's default preprocessing)" if checkpoint else ""
            )
            raise ConfigError(
                f"reward.pretrained={pretrained!r} is not a pretrained tag of {model}{with_checkpoint}; "
                f"its tags: {', '.join(tags) or 'none (use reward.pretrained=null or reward.checkpoint=PATH)'}"
            )
    source: str | None = None
    if checkpoint:
        path = Path(str(checkpoint)).expanduser()
        if not path.is_file():
            raise ConfigError(f"reward.checkpoint={checkpoint}: no such file")
        source = str(path)
    elif pretrained:
        source = _cached_pretrained(open_clip, model, pretrained)
        if source is None and not _hub_reachable():
            raise ConfigError(
                f"the weights of {model} / {pretrained} are not cached here and the model hub cannot be reached. "
                f"On a machine with access run: python -c \"import open_clip; open_clip.create_model_and_transforms("
                f"'{model}', pretrained='{pretrained}')\", copy the downloaded weights file (from ~/.cache/huggingface "
                f"or ~/.cache/clip) here and pass reward.checkpoint=PATH reward.model={model} reward.pretrained={pretrained}"
            )
        source = source or pretrained
    try:
        if source is not None and not Path(source).is_file():  # a tag to download
            net = open_clip.create_model(model, pretrained=source, device="cpu")
        else:
            net = open_clip.create_model(model, pretrained=None, device="cpu")
            if source is not None:
                open_clip.load_checkpoint(net, source)
    except (RuntimeError, AssertionError, KeyError, ValueError) as exc:  # open_clip's ways of saying "mismatch"
        what = f"reward.checkpoint={checkpoint}" if checkpoint else f"reward.pretrained={pretrained}"
        raise ConfigError(f"{what}: cannot load weights into {model}: {(str(exc) or type(exc).__name__).splitlines()[0]}") from exc
    net = net.to(device).eval().requires_grad_(False)
    base = dict(getattr(net.visual, "preprocess_cfg", {}) or {})
    base["size"] = getattr(net.visual, "image_size", base.get("size", 224))
    try:
        tokenizer = open_clip.get_tokenizer(model)
    except OSError as exc:  # a Hugging Face tokenizer (SigLIP, CLIPA, ...) that is not cached and cannot be fetched
        raise ConfigError(
            f"the tokenizer of {model} comes from the model hub and is not cached here "
            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); on a machine with access run "
            f"python -c \"import open_clip; open_clip.get_tokenizer('{model}')\" and copy ~/.cache/huggingface here"
        ) from exc
    return net, tokenizer, preprocess_config(model, pretrained, base)


class FramePreprocess:
    """open_clip's inference image transform as batched tensor operations (module docstring).

    Args:
        cfg: :func:`preprocess_config`'s output (size, mean, std, resize mode, interpolation, fill).
        device: Torch device of the frames and of the output.
    """

    def __init__(self, cfg: Mapping[str, Any], device: str = "cpu") -> None:
        import torch

        self.cfg = dict(cfg)
        self.size: tuple[int, int] = (int(cfg["size"][0]), int(cfg["size"][1]))
        self.device = device
        # (x / 255 - mean) / std as one multiply-add on 0..255 levels
        mean = torch.tensor(cfg["mean"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        std = torch.tensor(cfg["std"], dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self._scale, self._shift = 1.0 / (255.0 * std), -mean / std

    def __call__(self, frames: Any) -> Any:
        """Frames to model input.

        Args:
            frames: ``(batch, H, W, 3)`` uint8 frames, numpy or torch.

        Returns:
            ``(batch, 3, S_h, S_w)`` normalised float32 tensor on the device.
        """
        import torch

        with warnings.catch_warnings():  # read-only render buffers: never written to (the float copy is)
            warnings.simplefilter("ignore", UserWarning)
            x = torch.as_tensor(frames).to(self.device, non_blocking=True)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ConfigError(f"reward=clip needs RGB frames of shape (batch, H, W, 3); got {tuple(x.shape)}")
        x = self.resize(x.permute(0, 3, 1, 2).to(torch.float32, copy=True))
        return x.mul_(self._scale).add_(self._shift)

    def resize(self, x: Any) -> Any:
        """open_clip's inference resize (``image_transform``) on a batch of 0..255 float frames.

        ``shortest``: torchvision's ``Resize(side)`` for a square size (the long side truncated, as
        torchvision computes it) or open_clip's ``ResizeKeepRatio`` for a non-square one, then
        ``CenterCrop``; ``longest``: ``ResizeKeepRatio(longest=1)`` then ``CenterCropOrPad`` with
        ``fill_color``; ``squash``: ``Resize((h, w))``. PIL resizes antialiased and rounds to uint8
        levels (bicubic overshoot clipped); so does this.

        Args:
            x: ``(batch, 3, H, W)`` float frames in 0..255 (modified in place where possible).

        Returns:
            ``(batch, 3, S_h, S_w)`` float frames in 0..255.
        """
        import torch.nn.functional as F

        cfg = self.cfg
        out_h, out_w = self.size
        h, w = x.shape[-2:]
        mode, interpolation = cfg["resize_mode"], cfg["interpolation"]
        if mode == "squash":
            new_h, new_w = out_h, out_w
        elif mode == "shortest" and out_h == out_w:
            short, long = min(h, w), max(h, w)
            new_short, new_long = out_h, int(out_h * long / short)
            new_h, new_w = (new_long, new_short) if w <= h else (new_short, new_long)
        else:  # ResizeKeepRatio: shortest (non-square size) or longest side to the size
            ratio_h, ratio_w = h / out_h, w / out_w
            ratio = max(ratio_h, ratio_w) if mode == "longest" else min(ratio_h, ratio_w)
            new_h, new_w = round(h / ratio), round(w / ratio)
            if mode == "shortest":
                interpolation = "bicubic"  # open_clip's ResizeKeepRatio is built with its default here
        if (new_h, new_w) != (h, w):
            x = F.interpolate(x, size=(new_h, new_w), mode=interpolation, antialias=True, align_corners=False)
            x = x.round_().clamp_(0.0, 255.0)
        if mode == "longest" and (new_h < out_h or new_w < out_w):
            pad_h, pad_w = max(out_h - new_h, 0), max(out_w - new_w, 0)
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=float(cfg["fill_color"]))
            new_h, new_w = x.shape[-2:]
        if (new_h, new_w) != (out_h, out_w):
            top, left = round((new_h - out_h) / 2.0), round((new_w - out_w) / 2.0)  # as torchvision (half to even)
            x = x[:, :, top : top + out_h, left : left + out_w]
        return x


def vlm_rm_reward(x: Any, goal: Any, baseline: Any | None, alpha: float) -> Any:
    """VLM-RM's reward ``1 - |P (x - g)|^2 / 2`` without forming ``P`` (module docstring).

    Args:
        x: ``(batch, dim)`` unit-norm image embeddings (torch).
        goal: ``(dim,)`` goal embedding (unit-norm, or the mean of unit-norm ones).
        baseline: ``(dim,)`` baseline embedding (as ``goal``), or ``None``.
        alpha: Weight of the goal-baseline direction, in [0, 1].

    Returns:
        ``(batch,)`` rewards (torch, float32).
    """
    y = x.float() - goal.float()
    if baseline is None or alpha == 0.0:
        return 1.0 - 0.5 * (y * y).sum(-1)
    d = goal.float() - baseline.float()
    coef = (y @ d) / (d @ d)  # (batch,): the component of y along d
    py = alpha * coef[:, None] * d[None, :] + (1.0 - alpha) * y
    return 1.0 - 0.5 * (py * py).sum(-1)


class ClipScorer:
    """Embeds frames and text with one CLIP model and scores frames with :func:`vlm_rm_reward`.

    Args:
        model: open_clip architecture name.
        goal: Goal sentence, or a list of them (their unit-norm embeddings averaged, as vlmrm).
        baseline: Baseline sentence(s), or ``None``.
        alpha: Projection strength (needs a baseline to matter), in [0, 1].
        pretrained: open_clip tag (weights and preprocessing), or ``None`` for random weights.
        checkpoint: Local weights file, read instead of the tag's weights; ``pretrained`` then
            names the tag they came from (its preprocessing) or is ``None``.
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        precision: ``auto`` (bf16 autocast on GPU, fp32 on CPU) | ``fp32`` | ``fp16`` | ``bf16``.
        batch_size: Frames per forward pass (larger batches are split).
        resize: ``None`` (the tag's resize mode, module docstring) or an override: ``shortest``
            (shortest side, then a centre crop), ``longest`` (longest side, then padding) or
            ``squash`` (the whole frame, aspect ratio not kept; what vlmrm's own transform does).
    """

    def __init__(
        self,
        model: str = "ViT-B-32",
        goal: str | Sequence[str] = "",
        baseline: str | Sequence[str] | None = None,
        alpha: float = 1.0,
        pretrained: str | None = None,
        checkpoint: str | None = None,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 256,
        resize: str | None = None,
    ) -> None:
        import torch

        goals = [goal] if isinstance(goal, str) else list(goal or [])
        if not goals or not all(isinstance(g, str) and g.strip() for g in goals):
            raise ConfigError('reward=clip needs reward.goal="a sentence describing the goal state" (or a list)')
        baselines = [baseline] if isinstance(baseline, str) else list(baseline or [])
        if not 0.0 <= float(alpha) <= 1.0:
            raise ConfigError(f"reward.alpha={alpha} must lie in [0, 1]")
        if resize is not None and resize not in RESIZE_MODES:
            raise ConfigError(f"reward.resize={resize!r} is not one of null (the tag's), {', '.join(RESIZE_MODES)}")
        if precision not in PRECISIONS:
            raise ConfigError(f"reward.precision={precision!r} is not one of {', '.join(PRECISIONS)}")
        if int(batch_size) < 1:
            raise ConfigError(f"reward.batch_size={batch_size} must be >= 1")
        from experiments.cli import resolve_device

        self.device = resolve_device(str(device or "auto"))
        self.model, self.tokenizer, cfg = load_clip(model, pretrained, checkpoint, self.device)
        if resize is not None:
            cfg["resize_mode"] = resize
        self.preprocess_cfg: dict[str, Any] = cfg
        self.size: tuple[int, int] = cfg["size"]
        self._preprocess = FramePreprocess(cfg, self.device)
        self.alpha = float(alpha)
        self.batch_size = int(batch_size)
        on_gpu = self.device.startswith("cuda")
        if precision == "auto":
            precision = "bf16" if on_gpu else "fp32"
        self.autocast_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision)
        self.goal = self.embed_text(goals)
        self.baseline = self.embed_text(baselines) if baselines else None

    def _autocast(self) -> Any:
        import torch

        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.split(":")[0], dtype=self.autocast_dtype)

    def embed_text(self, sentences: Sequence[str]) -> Any:
        """Mean of the sentences' unit-norm text embeddings, not re-normalised (vlmrm): ``(dim,)`` float32."""
        import torch

        tokens = self.tokenizer(list(sentences)).to(self.device)
        with torch.inference_mode(), self._autocast():
            emb = self.model.encode_text(tokens, normalize=True).float()
        return emb.mean(0)

    def preprocess(self, frames: Any) -> Any:
        """``(batch, H, W, 3)`` uint8 frames -> ``(batch, 3, S_h, S_w)`` model input on the device (:class:`FramePreprocess`)."""
        return self._preprocess(frames)

    def embed_frames(self, frames: Any) -> Any:
        """``(batch, H, W, 3)`` uint8 frames -> ``(batch, dim)`` unit-norm float32 embeddings (torch)."""
        import torch

        chunks = []
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_size):
                x = self.preprocess(frames[start : start + self.batch_size])
                with self._autocast():
                    chunks.append(self.model.encode_image(x, normalize=True).float())
        return torch.cat(chunks) if chunks else torch.zeros(0, self.goal.shape[0], device=self.device)

    def score(self, frames: Any) -> np.ndarray:
        """VLM-RM rewards of ``(batch, H, W, 3)`` uint8 frames: ``(batch,)`` float32."""
        import torch

        with torch.inference_mode():
            r = vlm_rm_reward(self.embed_frames(frames), self.goal, self.baseline, self.alpha)
        return r.cpu().numpy().astype(np.float32)


class ClipReward(RewardProvider):
    """``reward=clip``: the VLM-RM reward of the frame after each transition (see :class:`ClipScorer` for args)."""

    needs = frozenset({"frame"})
    state_only = True  # depends only on the next state's frame

    def __init__(self, **scorer_kwargs: Any) -> None:
        self.scorer = ClipScorer(**scorer_kwargs)

    @override
    def reward(self, batch: TransitionBatch) -> np.ndarray:
        if batch.frames is None:
            raise ConfigError("reward=clip got a batch without frames (the env must render rgb_array frames)")
        return self.scorer.score(batch.frames)


class ClipTeacher:
    """Preference labels from CLIP: which of two frames (or clips) is closer to the goal.

    A clip's score is the mean VLM-RM reward of its frames. Labels follow the preference-learning
    convention ``0.0`` = left preferred, ``1.0`` = right preferred, ``0.5`` = equal (scores within
    ``equal_margin``).

    Args:
        equal_margin: Score difference below which a pair is labelled equal.
        **scorer_kwargs: As :class:`ClipScorer`.
    """

    def __init__(self, equal_margin: float = 0.0, **scorer_kwargs: Any) -> None:
        self.equal_margin = float(equal_margin)
        self.scorer = ClipScorer(**scorer_kwargs)

    def clip_scores(self, clips: np.ndarray) -> np.ndarray:
        """``(pairs, H, W, 3)`` frames or ``(pairs, T, H, W, 3)`` clips -> ``(pairs,)`` mean scores."""
        clips = np.asarray(clips)
        if clips.ndim == 4:
            return self.scorer.score(clips)
        if clips.ndim != 5:
            raise ValueError(f"expected (pairs, H, W, 3) frames or (pairs, T, H, W, 3) clips, got {clips.shape}")
        n, t = clips.shape[:2]
        return self.scorer.score(clips.reshape(n * t, *clips.shape[2:])).reshape(n, t).mean(1)

    def label(self, left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Preference labels ``(pairs,)`` in {0.0, 0.5, 1.0} for matching batches of frames or clips."""
        if np.shape(left) != np.shape(right):
            raise ValueError(f"left and right differ in shape: {np.shape(left)} vs {np.shape(right)}")
        diff = self.clip_scores(right) - self.clip_scores(left)
        labels = np.where(diff > 0, 1.0, 0.0).astype(np.float32)
        labels[np.abs(diff) <= self.equal_margin] = 0.5
        return labels
