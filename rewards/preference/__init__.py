"""Rewards learned from preferences between trajectory segments.

* :mod:`rewards.preference.segments`: fixed-length segments cut from a dataset or rollouts, and
  labelled pairs of them (:class:`~rewards.preference.segments.PreferencePairs`), stored as ``.npz``.
* :mod:`rewards.preference.teachers`: who labels a pair: the synthetic B-Pref teacher (Lee et al.
  2021: stochastic, myopic, mistaken, skipping, calling near-ties equal) and HERON's hierarchical
  teacher (Bukharin et al. 2023: compare by a ranked list of reward components).
* :mod:`rewards.preference.model`: Bradley-Terry reward models (an ensemble of MLPs) trained on
  labelled pairs, with ensemble disagreement for query selection.
"""
