"""Reward programs written by people or language models, run in a sandbox (``reward=code``).

* :mod:`rewards.code.contract` — what a program may contain; static checks with line numbers.
* :mod:`rewards.code.sandbox` — the locked-down worker process (threat model in its docstring).
* :mod:`rewards.code.validate` — checks before any RL compute (static, load, smoke test on env samples).
* :mod:`rewards.code.prompts` — env descriptions and chat messages (Text2Reward's compact representation).
* :mod:`rewards.code.llm` — OpenAI-compatible, local (transformers) and replay backends, all recorded on disk
  (the ``_target_`` of each node of the ``llm`` config group, ``experiments/conf/llm/``).
* :mod:`rewards.code.generate` — task -> checked program, with error feedback.
* :mod:`rewards.code.provider` — the ``reward=code`` provider.
* ``rewards/code/programs/`` — hand-written expert programs (baselines and few-shot examples).

``python -m rewards.code check --env ENV FILE.py`` checks a file; the Eureka/ICPL search is
``experiments/reward_search.py``. Nothing heavy is imported here.
"""
