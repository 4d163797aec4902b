"""rewardlab's entry points and the runner library behind them.

Entry points (Hydra, ``key=value`` overrides):

* ``python experiments/run.py env=E reward=R agent=A`` - train and evaluate one combination;
* ``python experiments/rollout.py run=<run dir> episodes=N`` - re-render videos of a saved run;
* ``python experiments/summarize.py <dir> ...`` - a table of results across runs and seeds.

Library: :mod:`experiments.builders` (envs, rewards, datasets and agents built from their configs,
shared by every entry point), :mod:`experiments.runner` (one run's lifecycle), :mod:`experiments.schema`
(``summary.json`` and ``metrics.csv``), :mod:`experiments.rundir` (run-directory files and checkpoints),
:mod:`experiments.evaluation` (true-reward evaluation, videos), :mod:`experiments.cli` (one-line
errors before a run starts). Configs live in ``experiments/conf/``.
"""
