"""Offline agents: learn from a fixed Minari dataset (``dataset=<id>``), evaluated in the env.

``agent=iql`` (:mod:`agents.offline.iql`), ``agent=bc`` (:mod:`agents.offline.bc`), ``agent=cpl``
(:mod:`agents.offline.cpl`, from segment preferences); datasets in
:mod:`envs.data` (labelled with the run's reward by :mod:`rewards.labels`), what the agents share in
:mod:`agents.offline.base`.
"""
