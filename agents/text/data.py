"""Offline data for the text agents: per training prompt, the human reply and ``k`` reference samples, scored.

A-LoL's "pre-existing data" (Baheti et al., 2024). For each of the training env's prompts
(:meth:`envs.text.TextEnv.prompts`, the ``train`` split):

* the corpus's human reply (``source: human``),
* ``k`` samples of the reference policy ``pi_ref`` at temperature ``temperature`` (``source: reference``),

each scored by the task's true scorer with its components. The records are stored once as JSON lines,
one response per line::

    {"prompt_index": 3, "prompt": "...", "response": "...", "source": "human", "sample": 0,
     "true_reward": 0.42, "components": {"sentiment": 0.42}}

under the dataset root of :mod:`envs.data` (``dataset_root=``, ``$MINARI_DATASETS_PATH`` or
``~/.minari/datasets``): ``<root>/local/text/<env id>/<model>-n<prompts>-k<k>-t<temperature>-s<seed>.jsonl``,
written atomically; a later run with the same recipe reads it (``agent.data=auto``), or any such file is
named directly (``agent.data=<path>``). Text data has no array form that Minari could hold (a response
is a string), so it is a plain JSON-lines file beside the Minari datasets.

``noisy > 0`` (A-LoL's noisy-data setting): a fraction ``noisy`` of the human replies are replaced by the
human reply of another prompt (a deterministic derangement from ``seed``), rescored, and marked
``source: shuffled``; the reference samples are kept. That variant is written next to the clean file
with ``-noisy<f>`` in its name.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from envs.errors import ConfigError

log = logging.getLogger("rewardlab")

Scorer = Callable[[Sequence[str], Sequence[str]], tuple[np.ndarray, dict[str, np.ndarray]]]


def default_path(
    env_id: str, model: str, n_prompts: int, k: int, temperature: float, seed: int, noisy: float = 0.0
) -> Path:
    """Where a recipe's records are cached (module docstring)."""
    from envs import data as ds

    name = f"{Path(str(model)).name}-n{n_prompts}-k{k}-t{temperature:g}-s{seed}" + (f"-noisy{noisy:g}" if noisy else "")
    return ds.dataset_root() / "local" / "text" / env_id.replace("/", "_") / f"{name}.jsonl"


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Write records as JSON lines atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines data file.

    Raises:
        ConfigError: No such file, or a line that is not a record with prompt, response and true_reward.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"text data file {path} not found; give agent.data=auto to build it, or an existing .jsonl")
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"text data file {path}: line {n} is not JSON ({exc})") from None
        if not isinstance(r, dict) or not {"prompt_index", "prompt", "response", "true_reward"} <= set(r):
            raise ConfigError(f"text data file {path}: line {n} lacks prompt_index, prompt, response or true_reward")
        out.append(r)
    if not out:
        raise ConfigError(f"text data file {path} holds no records")
    return out


def build(
    prompts: Sequence[str],
    human: Sequence[str],
    sample: Callable[[int], list[str]],
    score: Scorer,
    k: int,
) -> list[dict[str, Any]]:
    """The clean records: for each prompt its human reply and ``k`` reference samples, scored.

    Args:
        prompts: ``(N,)`` prompt texts.
        human: ``(N,)`` their human replies.
        sample: ``j -> (N,)`` the reference policy's ``j``-th response to every prompt.
        score: The task's scorer, ``(prompts, responses) -> (total, components)``.
        k: Reference samples per prompt.
    """
    rows: list[tuple[int, str, str, int]] = [(i, h, "human", 0) for i, h in enumerate(human)]
    for j in range(int(k)):
        rows += [(i, r, "reference", j) for i, r in enumerate(sample(j))]
    total, parts = score([prompts[i] for i, *_ in rows], [r for _, r, *_ in rows])
    return [
        {
            "prompt_index": i,
            "prompt": prompts[i],
            "response": r,
            "source": src,
            "sample": j,
            "true_reward": float(total[n]),
            "components": {c: float(v[n]) for c, v in parts.items()},
        }
        for n, (i, r, src, j) in enumerate(rows)
    ]


def make_noisy(records: Sequence[dict[str, Any]], fraction: float, seed: int, score: Scorer) -> list[dict[str, Any]]:
    """Replace a ``fraction`` of the human replies by other prompts' human replies, rescored (module docstring)."""
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"agent.noisy={fraction!r} must be in [0, 1]")
    out = [dict(r) for r in records]
    human = [n for n, r in enumerate(out) if r["source"] == "human"]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(human), size=round(fraction * len(human)), replace=False)
    if len(chosen) < 2:
        return out
    donors = np.roll(chosen, 1)  # a derangement of the chosen items: every reply moves to another prompt
    replies = [out[human[d]]["response"] for d in donors]
    targets = [human[c] for c in chosen]
    total, parts = score([out[t]["prompt"] for t in targets], replies)
    for n, (t, reply) in enumerate(zip(targets, replies, strict=True)):
        out[t].update(
            response=reply,
            source="shuffled",
            true_reward=float(total[n]),
            components={c: float(v[n]) for c, v in parts.items()},
        )
    return out
