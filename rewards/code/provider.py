r"""``reward=code``: a reward program (a user's file, or one a language model writes) run in the sandbox.

    python experiments/run.py env=cartpole reward=code reward.source=rewards/code/programs/cartpole.py
    python experiments/run.py env=cartpole reward=code reward.task="balance the pole" \
        llm=openai llm.base_url=http://127.0.0.1:8000/v1 llm.model=NAME

The program comes from a file (:func:`program_from_file`) or from a language model given the task
(:func:`program_from_task`; the model is the run's ``llm`` config node, built only then). It is
checked before training starts (:mod:`rewards.code.validate`); with a task, the model is asked
again with the error until a program passes or ``reward.attempts`` calls are spent.
Every batch goes through one sandbox worker (:mod:`rewards.code.sandbox`); if the program breaks a
limit during training, the run stops with the program's error (the checkpoint is kept). The run
directory gets ``reward_program.py`` and ``reward_program.json`` (where the program came from, its
hash, the check, and the sandbox layers in force). Components are logged per episode.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from typing_extensions import override

from envs.errors import ConfigError
from rewards.base import RewardProvider, TransitionBatch
from rewards.code.contract import check_source, feedback
from rewards.code.generate import code_hash, propose
from rewards.code.llm import LLMBackend, Sampling, backend_from_config
from rewards.code.sandbox import Sandbox, SandboxLimits

log = logging.getLogger("rewardlab")


def sandbox_limits(limits: Mapping[str, Any] | None) -> SandboxLimits:
    """``reward.limits`` (a mapping) as :class:`SandboxLimits`, refusing unknown keys."""
    limits = dict(limits or {})
    known = {f.name for f in fields(SandboxLimits)}
    unknown = sorted(set(limits) - known)
    if unknown:
        raise ConfigError(f"reward.limits: unknown key(s) {unknown}; accepted: {', '.join(sorted(known))}")
    return SandboxLimits(**limits)


def read_program(source: str | Path) -> str:
    """The text of a program file, with the shipped programs listed when it is missing.

    A relative path is looked up from the working directory, then from the root of this source tree,
    so ``rewards/code/programs/cartpole.py`` names the shipped program from anywhere (a study's or a
    sweep's configs keep working wherever they are launched).

    Raises:
        ConfigError: No such file (the message lists the shipped programs).
    """
    path = Path(source).expanduser()
    if not path.is_file() and not path.is_absolute():
        in_tree = Path(__file__).resolve().parents[2] / path
        path = in_tree if in_tree.is_file() else path
    if not path.is_file():
        from rewards.code.programs import PROGRAMS, program_path

        shipped = ", ".join(str(program_path(name)) for name in sorted(PROGRAMS))
        raise ConfigError(f"reward.source={source!s}: no such file. Shipped programs: {shipped}")
    return path.read_text()


@dataclass
class Program:
    """A reward program's text and where it came from.

    Attributes:
        text: The program's source.
        filename: The name it is loaded under in the sandbox (shown in tracebacks).
        meta: Provenance for ``reward_program.json`` (origin, source or task, model calls, ...).
    """

    text: str
    filename: str
    meta: dict[str, Any] = field(default_factory=dict)


def _smoke_check(program: Program, env: Mapping[str, Any], samples: int, seed: int, limits: SandboxLimits) -> None:
    """Run the check CLI's load and smoke stages on a program file (wrong shapes, NaN, a loop that never ends).

    Raises:
        ConfigError: The program fails a check; the message names the stage, the reason and the line.
    """
    from rewards.code.validate import check_program, sample_transitions

    result = check_program(program.text, sample_transitions(env, samples, seed), limits, program.filename)
    program.meta["check"] = result.to_dict()
    if not result.ok:
        raise ConfigError(
            f"reward.source={program.meta.get('source')} fails the {result.stage} check on {samples} transitions "
            f"of env={env.get('name')} (as `python -m rewards.code check` would): {result.message}"
        )


def program_from_file(source: str | Path) -> Program:
    """The program in a file, checked against the reward-code contract.

    Raises:
        ConfigError: No such file (the shipped programs are listed), or the contract is broken.
    """
    text = read_program(source)
    problems = check_source(text)
    if problems:
        raise ConfigError(f"reward.source={source} breaks the reward-code contract:\n{feedback(problems)}")
    return Program(text, Path(source).name, {"origin": "file", "source": str(source)})


def program_from_task(
    task: str,
    backend: LLMBackend,
    env: Mapping[str, Any],
    sampling: Sampling,
    attempts: int = 4,
    examples: list[str] | None = None,
    limits: SandboxLimits | None = None,
    smoke_samples: int = 256,
    seed: int = 0,
) -> Program:
    """A program a language model writes for ``task`` in ``env`` and that passes the checks.

    Args:
        task: The task in words.
        backend: The language model.
        env: The env config (the prompt's description of it, and the smoke test's transitions).
        sampling: Temperature, top-p and token budget of each call.
        attempts: Model calls allowed; each failed check is fed back with the error.
        examples: Names of shipped programs given to the model as examples (few-shot).
        limits: The sandbox limits the checks run under.
        smoke_samples: Random-action transitions the program is tested on.
        seed: Seeds the smoke-test sampling.

    Raises:
        ConfigError: No program passed the checks within ``attempts`` calls (every failure listed).
        LLMError: A model call failed (after its retries).
    """
    from envs.make import make_env
    from rewards.code.prompts import describe_env
    from rewards.code.validate import sample_transitions

    probe = make_env(env)
    try:
        description = describe_env(probe, str(env.get("name", env.get("id"))))
    finally:
        probe.close()
    sample = sample_transitions(env, int(smoke_samples), int(seed))
    shots = example_programs(examples)
    log.info("asking %s (%s) for a reward program: %s", backend.name, backend.model, task)
    candidates = propose(backend, task, description, sample, sampling, 0, int(attempts), examples=shots, limits=limits)
    last = candidates[-1]
    meta = {
        "origin": "model",
        "task": task,
        "backend": last.backend,
        "model": last.model,
        "calls": [c.to_dict() for c in candidates],
    }
    if not last.check.ok:
        reasons = "\n".join(f"  call {c.index}: [{c.check.stage}] {c.check.message[:300]}" for c in candidates)
        raise ConfigError(
            f"reward=code: no program passed the checks in {len(candidates)} model call(s) "
            f"(raise reward.attempts, or use a stronger model):\n{reasons}"
        )
    log.info("reward program accepted after %d call(s): %s", len(candidates), code_hash(last.code or ""))
    return Program(str(last.code), "reward_program.py", meta)


class CodeReward(RewardProvider):
    """Runs a reward program in a sandbox worker (module docstring).

    Args:
        source: Path of a program file (takes precedence over ``task``).
        task: The task in words, for a language model to write the program.
        llm: The language model: an ``llm`` config node (``_target_``: a backend class of
            :mod:`rewards.code.llm`), built only with a task and no source, or a backend.
        temperature, top_p, max_tokens: Sampling settings of the model calls.
        attempts: Model calls allowed to reach a program that passes the checks.
        examples: Names of shipped programs given to the model as examples (few-shot).
        limits: Sandbox limits (:class:`SandboxLimits` fields).
        env: The run's env config (``${env}``), for the prompt and the smoke test.
        smoke_samples: Transitions sampled for the smoke test.
        seed: Seeds the smoke-test sampling.
    """

    def __init__(
        self,
        source: str | None = None,
        task: str | None = None,
        llm: Mapping[str, Any] | LLMBackend | None = None,
        temperature: float = 0.8,
        top_p: float = 0.95,
        max_tokens: int = 768,
        attempts: int = 4,
        examples: list[str] | None = None,
        limits: Mapping[str, Any] | None = None,
        env: Mapping[str, Any] | None = None,
        smoke_samples: int = 256,
        seed: int = 0,
    ) -> None:
        self.limits = sandbox_limits(limits)
        self.last_components: dict[str, np.ndarray] = {}
        if source:
            program = program_from_file(source)
            if env is not None and int(smoke_samples) > 0:  # before the run starts: its run directory too
                _smoke_check(program, env, int(smoke_samples), int(seed), self.limits)
        elif task:
            if env is None:
                raise ConfigError("reward=code with reward.task needs the env config (reward.env=${env})")
            sampling = Sampling(float(temperature), float(top_p), int(max_tokens))
            backend = backend_from_config(llm)
            program = program_from_task(
                task, backend, env, sampling, attempts, examples, self.limits, smoke_samples, seed
            )
        else:
            raise ConfigError(
                "reward=code needs reward.source=FILE.py (e.g. rewards/code/programs/cartpole.py) "
                'or reward.task="what the agent should do" with llm=openai|local|replay'
            )
        self._start(program)

    def _start(self, program: Program) -> None:
        """Load ``program`` into a fresh sandbox worker."""
        self.source_text, self.filename = program.text, program.filename
        self.meta: dict[str, Any] = {**program.meta, "code_hash": code_hash(program.text)}
        self.sandbox = Sandbox(self.limits)
        self.sandbox.load(self.source_text, self.filename)
        self.meta["sandbox_layers"] = list(self.sandbox.layers)

    @override
    def reward(self, batch: TransitionBatch) -> np.ndarray:
        out = self.sandbox.call(batch.obs, batch.action, batch.next_obs)
        self.last_components = out.components
        return out.reward.astype(np.float32)

    @override
    def files(self) -> dict[str, str]:
        return {
            "reward_program.py": self.source_text,
            "reward_program.json": json.dumps(self.meta, indent=2, default=str),
        }

    @override
    def close(self) -> None:
        sandbox = getattr(self, "sandbox", None)
        if sandbox is not None:
            sandbox.close()


def example_programs(names: list[str] | None) -> list[str]:
    """The sources of shipped programs by name (``reward.examples``), for few-shot prompts."""
    from rewards.code.programs import program_path

    out = []
    for name in names or []:
        try:
            out.append(read_program(program_path(name)))
        except ValueError as exc:
            raise ConfigError(f"reward.examples: {exc}") from exc
    return out
