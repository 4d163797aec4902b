"""Model-based agents: a learned dynamics ensemble, planned through with any reward provider.

mbrl-lib's split: models (:mod:`agents.model_based.dynamics`: the probabilistic ensemble), planning
(:mod:`agents.model_based.planning`: CEM, iCEM, model-predictive control and
:func:`~agents.model_based.planning.evaluate_action_sequences`), algorithms (``agent=pets``:
:mod:`agents.model_based.pets`).
"""
