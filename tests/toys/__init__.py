"""A toy agent and a toy reward provider added from outside the packages, as a user adds their own.

Each is one code file plus one config: ``tests/toys/agent.py`` + ``tests/toys/conf/agent/toy_search.yaml``,
``tests/toys/reward.py`` + ``tests/toys/conf/reward/toy_upright.yaml``. The run finds the configs with
Hydra's search path::

    python experiments/run.py hydra.searchpath=[file://$PWD/tests/toys/conf] env=cartpole reward=toy_upright agent=toy_search
"""
