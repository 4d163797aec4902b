"""Rewards learned from preferences between trajectory segments.

* :mod:`rewards.preference.segments`: fixed-length segments cut from a dataset or rollouts, and
  labelled pairs of them (:class:`~rewards.preference.segments.PreferencePairs`), stored as ``.npz``.
* :mod:`rewards.preference.teachers`: who labels a pair: the synthetic B-Pref teacher (Lee et al.
  2021: stochastic, myopic, mistaken, skipping, calling near-ties equal) and HERON's hierarchical
  teacher (Bukharin et al. 2023: compare by a ranked list of reward components), and CLIP as a
  teacher on frames; the ``reward/teacher`` config group.
* :mod:`rewards.preference.model`: Bradley-Terry reward models (an ensemble of MLPs, or of CNNs on
  frames) trained on labelled pairs, with ensemble disagreement for query selection; the factories
  the ``reward/model`` config group builds.
* :mod:`rewards.preference.provider`: ``reward=preference``, learning online or from a preference file.
"""
