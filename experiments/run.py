#!/usr/bin/env python
"""Train and evaluate one env x reward x agent combination; see README.md and experiments/conf/.

Usage::

    python experiments/run.py env=<E> reward=<R> agent=<A> [seed=N] [steps=N] [device=auto|cpu|cuda]
                              [hydra.run.dir=DIR] [resume=DIR] [preset=smoke]
    python experiments/run.py -m env=cartpole agent=ppo,a2c seed=0,1,2      # a local parallel sweep
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from experiments.cli import expand_shorthands, precheck, user_errors

with user_errors():
    sys.argv[1:] = expand_shorthands(sys.argv[1:])
    precheck(sys.argv[1:])

import hydra

from experiments.task import main as task

# the task function lives in experiments/task.py, so sweep workers import it by reference
CONF = str(Path(__file__).resolve().parent / "conf")
main = hydra.main(config_path=CONF, config_name="config", version_base="1.3")(task)

if __name__ == "__main__":
    main()
