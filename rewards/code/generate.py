"""From a task sentence to a checked reward program: prompt, sample, extract, validate, retry.

:func:`propose` is shared by ``reward=code reward.task=...`` (one program for one run) and by the
Eureka/ICPL search (``experiments/reward_search.py``, many programs per iteration). Each model call
is one :class:`Candidate`, kept with everything needed to reproduce and audit it: the messages,
backend, model, sampling settings, the raw response, the extracted code and its hash, and the check.
A program that fails a check is fed back to the model with the error and the offending line
(Text2Reward's and Eureka's error feedback), up to ``attempts`` calls.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any

from rewards.code.contract import clean_text
from rewards.code.llm import LLMBackend, Sampling
from rewards.code.prompts import build_messages, extract_code
from rewards.code.sandbox import SandboxLimits
from rewards.code.validate import CheckResult, Transitions, check_program


def code_hash(source: str) -> str:
    """First 12 hex digits of the SHA-256 of the program's source."""
    return hashlib.sha256(source.encode()).hexdigest()[:12]


@dataclass
class Candidate:
    """One model call and what came of it.

    Attributes:
        index: The call's sample index (distinct per call, so cached responses replay exactly).
        messages: The chat messages sent.
        response: The model's raw text.
        code: The extracted program, or None when the response held none.
        code_hash: :func:`code_hash` of ``code`` (empty when no code).
        check: The validation result (stage ``"extract"`` when no code was found).
        backend, model, cache_key, seconds, cached: Provenance of the response.
        sampling: Sampling settings of the call.
        results: Filled in by the search: training results of this program.
    """

    index: int
    messages: list[dict[str, str]]
    response: str
    code: str | None
    code_hash: str
    check: CheckResult
    backend: str
    model: str
    cache_key: str
    seconds: float
    cached: bool
    sampling: dict[str, Any]
    results: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The call as plain JSON-ready data (``check`` as :meth:`CheckResult.to_dict`)."""
        out = asdict(self)
        out["check"] = self.check.to_dict()
        return out


def propose(
    backend: LLMBackend,
    task: str,
    env_description: str,
    sample: Transitions,
    sampling: Sampling,
    index: int,
    attempts: int = 1,
    feedback: str | None = None,
    previous_code: str | None = None,
    examples: list[str] | None = None,
    limits: SandboxLimits | None = None,
) -> list[Candidate]:
    """Ask for a program, check it, and on failure ask again with the error (at most ``attempts`` calls).

    Args:
        backend: The language-model backend.
        task: What the agent should do, in words.
        env_description: :func:`rewards.code.prompts.describe_env` of the env.
        sample: Transitions for the smoke test.
        sampling: Temperature, top-p, max tokens.
        index: Sample index of the first call; call ``a`` uses ``index * attempts + a``.
        attempts: Maximum model calls.
        feedback: Reflection text from a previous iteration (Eureka), if any.
        previous_code: The program that feedback is about.
        examples: Few-shot example programs.
        limits: Sandbox limits for the smoke test.

    Returns:
        Every candidate, in call order; the last one passed its check if any did.
    """
    out: list[Candidate] = []
    fb, prev = feedback, previous_code
    for attempt in range(max(1, int(attempts))):
        messages = build_messages(task, env_description, examples=examples, feedback=fb, previous_code=prev)
        completion = backend.complete(messages, sampling, sample_index=index * max(1, int(attempts)) + attempt)
        code = extract_code(completion.text)
        if code is None:
            check = CheckResult(
                False,
                "extract",
                "the response contained no Python code defining compute_reward(obs, action, next_obs); "
                "answer with one ```python block",
            )
        else:
            check = check_program(code, sample, limits, filename=f"candidate_{index}_{attempt}.py")
        out.append(
            Candidate(
                index=index * max(1, int(attempts)) + attempt,
                messages=messages,
                response=completion.text,
                code=code,
                code_hash=code_hash(code) if code else "",
                check=check,
                backend=completion.backend,
                model=completion.model,
                cache_key=completion.key,
                seconds=completion.seconds,
                cached=completion.cached,
                sampling=asdict(sampling),
            )
        )
        if check.ok:
            break
        # the message quotes the program (its errors, its prints): cleaned and cut before the model sees it
        fb = f"The program failed the {check.stage} check:\n{clean_text(check.message, 4000)}\nFix it."
        prev = code if code is not None else prev
    return out
