#!/usr/bin/env python
"""Make a preference dataset: segment pairs cut from an offline dataset, labelled by a synthetic teacher.

    python experiments/prefs.py dataset=<id> pairs=1000 segment=25 name=<name> [teacher.mistake=0.1 ...]

Segments are drawn uniformly over the dataset's valid positions (inside one episode each), paired
at random and labelled by B-Pref's synthetic teacher on the true reward (``teacher.*``: rationality,
myopia, mistakes, skip and equal thresholds). The pairs are stored with the dataset they came from,
``<dataset dir>/preferences/<name>.npz``, and read by ``agent=cpl agent.preferences=<name>`` and
``reward=preference reward.pairs=<file>`` (the reward model of P-IQL). ``frames=true`` keeps the
dataset's frames in the pairs (for the CNN reward model, ``reward/model=cnn``; collect with frames).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

import numpy as np

from envs.errors import ConfigError
from experiments.cli import check_int, compose_script, dataset_source, user_errors


def main(argv: list[str]) -> dict[str, Any]:
    """Cut segment pairs from a dataset, label them with the synthetic teacher, save them (module docstring).

    Args:
        argv: ``key=value`` overrides of ``experiments/conf/prefs.yaml`` (``dataset=``, ``pairs=``,
            ``segment=``, ``name=``, ``teacher.*=``, ``frames=`` ...).

    Returns:
        ``path`` (the ``.npz`` written), ``pairs``, ``labels`` (the count of each label name) and ``seconds``.

    Raises:
        ConfigError: A bad setting, or a preference file of that name already exists.
    """
    cfg = compose_script(list(argv), "prefs", "prefs.py")
    dataset, root = dataset_source(cfg, "prefs.py")
    check_int(cfg, "pairs", 1)
    check_int(cfg, "segment", 1)
    from envs import data as ds
    from rewards.preference.segments import LABEL_NAMES, PreferencePairs, cut_segments
    from rewards.preference.teachers import SyntheticTeacher

    t0 = time.time()
    out = ds.preferences_dir(dataset, root) / f"{cfg.name}.npz"
    if out.exists():
        raise ConfigError(f"{out} already exists; give another name=")
    data = ds.load(dataset, root, extras={"frame"} if cfg.frames else ())
    teacher = SyntheticTeacher(**dict(cfg.teacher))
    rng = np.random.default_rng(int(cfg.seed))
    left = cut_segments(data, int(cfg.segment), int(cfg.pairs), rng)
    right = cut_segments(data, int(cfg.segment), int(cfg.pairs), rng)
    labels = teacher.label(left, right, rng)
    pairs = PreferencePairs(left, right, labels, teacher.describe(), dataset)
    pairs.save(out)
    counts = {LABEL_NAMES[k]: int(np.sum(labels == k)) for k in LABEL_NAMES}
    result = {"path": str(out), "pairs": len(pairs), "labels": counts, "seconds": round(time.time() - t0, 1)}
    print(
        f"{dataset}: {len(pairs)} pairs of {cfg.segment}-step segments labelled by {teacher.describe()}: "
        f"{', '.join(f'{k} {v}' for k, v in counts.items())} -> {out}",
        file=sys.stderr,
    )
    return result


if __name__ == "__main__":
    with user_errors():
        main(sys.argv[1:])
