"""Text agents for the ``text-<task>`` envs: a causal-LM policy trained offline on scored responses.

``agent=alol`` (:mod:`agents.text.alol`: A-LoL and its variants, R-LoL), ``agent=nll|wbc|dpo|pro``
(:mod:`agents.text.baselines`); the policy in :mod:`agents.text.policy`, the offline data in
:mod:`agents.text.data`, what they share in :mod:`agents.text.base`.
"""
