"""Agents for ``env=jobshop``: dispatching rules (:mod:`.pdr`), CP-SAT (:mod:`.cpsat`), and the
size-agnostic MaskablePPO policy of the learned dispatcher (:mod:`.policy`)."""
