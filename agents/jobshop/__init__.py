"""Agents for ``env=jobshop``: dispatching rules, CP-SAT, and the learned dispatcher's policy.

Dispatching rules (:mod:`.pdr`), CP-SAT (:mod:`.cpsat`), and the size-agnostic MaskablePPO
policy of the learned dispatcher (:mod:`.policy`).
"""
