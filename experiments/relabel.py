#!/usr/bin/env python
"""Label an offline dataset with a reward provider, keeping the true reward beside the proxy.

    python experiments/relabel.py dataset=<id> reward=R [reward.*=...] [name=<new id>] [dataset_root=DIR]

The pipeline of "Real-World Offline RL from VLM Feedback": score every transition of a dataset
with a learned, zero-shot or hand-written reward, then learn offline from the labels. The new
dataset is a Minari dataset whose ``rewards`` are the provider's (so any Minari consumer trains
on them), with the env's own reward in ``infos["true_reward"]``, the provider's named components
(if it reports any) in ``infos["reward_components"]``, frames carried over, and the provider's
config in the metadata. ``run.py agent=iql dataset=<new id> dataset.labels=stored reward=R`` trains
on the stored labels without calling the provider again (useful for slow providers); the default
``dataset.labels=provider`` labels the data at the start of each run instead.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

import numpy as np

from envs.errors import ConfigError
from experiments.cli import check_int, compose_script, config_dict, dataset_source, user_errors


def _with_dataset_env(argv: list[str]) -> list[str]:
    """Add ``env=<the dataset's env>`` when none is given (the dataset's metadata knows it)."""
    if any(a.split("=", 1)[0] == "env" for a in argv):
        return argv
    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    if not opts.get("dataset"):
        return argv
    from envs import data as ds

    env = (ds.read_metadata(opts["dataset"], opts.get("dataset_root") or None).get(ds.META) or {}).get("env") or {}
    return [*argv, f"env={env['name']}"] if env.get("name") else argv


def main(argv: list[str]) -> dict[str, Any]:
    """Write a copy of a dataset labelled with a reward provider (module docstring).

    Args:
        argv: ``key=value`` overrides of ``experiments/conf/relabel.yaml`` (``dataset=``, ``reward=``,
            ``name=``, ...); ``env=`` defaults to the env the dataset was collected on.

    Returns:
        ``dataset`` (the new id), ``path``, ``steps``, ``proxy_mean``, ``true_mean``, ``pearson`` (of the
        proxy and the true reward over the transitions) and ``seconds``.

    Raises:
        ConfigError: A bad setting, a dataset name already taken, or a dataset of another env.
    """
    cfg = compose_script(_with_dataset_env(list(argv)), "relabel", "relabel.py")
    src, root = dataset_source(cfg, "relabel.py")
    check_int(cfg, "chunk", 1)
    import torch

    from envs import data as ds
    from experiments.builders import build_reward
    from rewards.labels import label

    torch.set_num_threads(1)
    t0 = time.time()
    reward_cfg = config_dict(cfg.reward)
    from minari.dataset.minari_dataset import parse_dataset_id

    ds.check_id(src)
    namespace, dataset_name, version = parse_dataset_id(src)
    name = (
        str(cfg.name)
        if cfg.name
        else f"{namespace + '/' if namespace else ''}{dataset_name}-{reward_cfg['name']}-v{version}"
    )
    if ds.dataset_path(name, root).exists():
        raise ConfigError(f"dataset {name!r} already exists under {ds.dataset_root(root)}; give another name=")
    provider = build_reward(cfg.reward)
    data = ds.load(src, root, extras=provider.needs)
    meta = data.metadata.get(ds.META) or {}
    env_cfg = config_dict(cfg.env)
    if meta.get("env") and meta["env"].get("id") != env_cfg.get("id"):
        raise ConfigError(
            f"dataset {src!r} was collected on {meta['env'].get('id')}, not env={env_cfg['name']} ({env_cfg['id']})"
        )
    provider.bind(data.observation_space, data.action_space)
    components: dict[str, np.ndarray] = {}
    proxy = label(data, provider, int(cfg.chunk), components)
    provider.close()
    infos: dict[str, Any] = {ds.TRUE_REWARD: data.true_rewards}
    infos.update(data.extras)  # frames (and other extras) carried over
    episodes = data.episodes(rewards=proxy, infos=infos)
    if components:
        for ep, (a, b) in zip(episodes, zip(data.episode_starts[:-1], data.episode_starts[1:], strict=True), strict=True):
            assert ep.infos is not None  # the infos given to data.episodes() hold the true reward
            ep.infos["reward_components"] = {k: v[a:b] for k, v in components.items()}
    labels = {"provider": type(provider).__name__, "reward": reward_cfg, "source": src}
    path = ds.write(
        name,
        episodes,
        data.observation_space,
        data.action_space,
        root=root,
        env_spec=None,
        algorithm=data.metadata.get("algorithm_name", ""),
        description=f"{src} relabelled with reward={reward_cfg['name']} ({type(provider).__name__}); true reward in infos/true_reward",
        ref_scores=data.reference_scores,
        extra={**meta, "labels": labels},
    )
    r = np.corrcoef(proxy, data.true_rewards)[0, 1] if proxy.std() > 0 and data.true_rewards.std() > 0 else float("nan")
    result = {
        "dataset": name,
        "path": str(path),
        "steps": len(data),
        "proxy_mean": float(proxy.mean()),
        "true_mean": float(data.true_rewards.mean()),
        "pearson": float(r),
        "seconds": round(time.time() - t0, 1),
    }
    print(
        f"{name}: {len(data)} transitions labelled by {type(provider).__name__}: proxy mean {proxy.mean():.4g}, "
        f"true mean {data.true_rewards.mean():.4g}, Pearson {r:.3f} -> {path} in {result['seconds']} s",
        file=sys.stderr,
    )
    return result


if __name__ == "__main__":
    with user_errors():
        main(sys.argv[1:])
