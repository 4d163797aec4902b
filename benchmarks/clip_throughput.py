#!/usr/bin/env python
"""CLIP reward throughput: rewardlab's provider vs a bare open_clip loop, and end-to-end frames/s.

    python benchmarks/clip_throughput.py [--model ViT-B-32] [--device auto] [--threads 2]
                                         [--batches 8 64] [--envs cartpole humanoid] [--n-envs 8] [--steps 16]

1. **Scoring** (same uint8 frames, same model, same batches; medians of ``--repeats``):
   * ``rewardlab``: ``ClipScorer.score(frames)`` — frames to the device, resize and normalise as
     tensors, ``encode_image``, VLM-RM projection, rewards back to numpy;
   * ``bare open_clip``: open_clip's own PIL preprocessing per frame, ``torch.stack``,
     ``encode_image``, cosine similarity to the goal — what a script calling open_clip does;
   * ``model only``: ``encode_image`` on an already preprocessed tensor (the floor).
   Frames are rendered-size (``--frame 256 384``), so both pipelines resize. Ratio = bare time /
   rewardlab time (>= 1: rewardlab is faster); and model-only time / rewardlab time (our overhead).
2. **End to end**: ``--n-envs`` vector envs stepped with random actions through the reward wrapper
   with ``reward=clip``; frames/s, and the share of time spent stepping + rendering vs scoring
   (the same loop with ``reward=env`` and frames captured measures step + render alone).

Untrained weights (``pretrained=None``) cost exactly what trained ones do. No weights are needed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import numpy as np  # noqa: E402


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_time(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def scoring(args: argparse.Namespace) -> None:
    import open_clip
    import torch
    from PIL import Image

    from rewards.clip import ClipScorer

    scorer = ClipScorer(model=args.model, pretrained=None, goal="a pole standing upright", device=args.device)
    device = scorer.device
    _, _, pil_preprocess = open_clip.create_model_and_transforms(args.model, pretrained=None)
    model = scorer.model  # the same weights for all three
    tokens = open_clip.get_tokenizer(args.model)(["a pole standing upright"]).to(device)
    with torch.inference_mode():
        goal = model.encode_text(tokens, normalize=True)[0]
    print(f"\n## scoring: {args.model} on {device} ({torch.get_num_threads()} threads), frames {args.frame[0]}x{args.frame[1]}, "
          f"autocast {scorer.autocast_dtype}")
    print("| batch | rewardlab frames/s | bare open_clip frames/s | ratio (bare time / ours) | model only frames/s | ours / model-only speed |")
    print("|---|---|---|---|---|---|")
    for batch in args.batches:
        frames = np.random.default_rng(batch).integers(0, 256, size=(batch, *args.frame, 3), dtype=np.uint8)
        ready = scorer.preprocess(frames)

        def ours(frames: np.ndarray = frames) -> None:  # bound now: each batch times its own frames
            scorer.score(frames)

        def bare(frames: np.ndarray = frames) -> None:
            x = torch.stack([pil_preprocess(Image.fromarray(f)) for f in frames]).to(device)
            with torch.inference_mode(), scorer._autocast():
                emb = model.encode_image(x, normalize=True)
            (emb.float() @ goal.float()).cpu().numpy()

        def model_only(ready: torch.Tensor = ready) -> None:
            with torch.inference_mode(), scorer._autocast():
                model.encode_image(ready, normalize=True)

        t_ours, t_bare, t_model = (_median_time(f, args.repeats, device) for f in (ours, bare, model_only))
        print(f"| {batch} | {batch / t_ours:.1f} | {batch / t_bare:.1f} | {t_bare / t_ours:.2f} | {batch / t_model:.1f} | {t_model / t_ours:.2f} |")
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
            scorer.score(frames)
            print(f"|   | peak GPU memory at batch {batch}: {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB |")


def end_to_end(args: argparse.Namespace) -> None:
    import torch
    from omegaconf import OmegaConf

    from envs.make import make_vec_env
    from rewards.clip import ClipReward
    from rewards.env import EnvReward
    from rewards.wrapper import RewardVecEnv

    print(f"\n## end to end: {args.n_envs} envs, {args.steps} vector steps, random actions, {args.model} "
          f"({torch.get_num_threads()} threads)")
    print("| env | frame | step + render frames/s | step + render + CLIP frames/s | time in CLIP | time in step + render |")
    print("|---|---|---|---|---|---|")
    provider = ClipReward(model=args.model, pretrained=None, goal="a robot standing upright", device=args.device)
    for name in args.envs:
        env_cfg = OmegaConf.to_container(OmegaConf.load(REPO / "experiments" / "conf" / "env" / f"{name}.yaml"))
        rates = {}
        for label, reward in (("render", EnvReward()), ("clip", provider)):
            if label == "render":
                reward.needs = frozenset({"frame"})  # capture frames and drop them: step + render alone
            venv = RewardVecEnv(make_vec_env(env_cfg, args.n_envs, seed=0, extras={"frame"}), reward)
            venv.action_space.seed(0)
            venv.reset()
            actions = [np.stack([venv.action_space.sample() for _ in range(args.n_envs)]) for _ in range(args.steps + 2)]
            for a in actions[:2]:
                venv.step(a)  # warm-up (renderer contexts, first forward pass)
            t0 = time.perf_counter()
            for a in actions[2:]:
                venv.step(a)
            rates[label] = args.n_envs * args.steps / (time.perf_counter() - t0)
            frame_shape = venv.venv.envs[0].render().shape
            venv.venv.close()
        t_render, t_total = 1 / rates["render"], 1 / rates["clip"]
        clip_share = max(0.0, 1 - t_render / t_total)
        print(f"| {name} | {frame_shape[1]}x{frame_shape[0]} | {rates['render']:.0f} | {rates['clip']:.1f} | "
              f"{100 * clip_share:.0f}% | {100 * (1 - clip_share):.0f}% |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    parser.add_argument("--batches", type=int, nargs="*", default=[8, 64])
    parser.add_argument("--frame", type=int, nargs=2, default=[256, 384], metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--envs", nargs="*", default=["cartpole", "humanoid"])
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--skip-scoring", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if not args.skip_scoring:
        scoring(args)
    if args.envs:
        end_to_end(args)


if __name__ == "__main__":
    main()
