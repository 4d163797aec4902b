"""What the language model is told: the contract, the env in a few Pythonic lines, the task, feedback.

Text2Reward's idea: instead of the env's source (Eureka) or a prose description, give the model a
compact, Pythonic map of the observation and action arrays, names to indices, plus the facts a
reward needs (termination conditions, what the actions do). :func:`describe_env` takes the layout
from the env's card (``describe`` of :class:`envs.cards.EnvCard`, written next to each env family:
classic control, MuJoCo v5 locomotion, MiniGrid with the one-hot observation of
:mod:`envs.minigrid`, job-shop scheduling); a layout is used only when it matches the
observation's shape (a kwarg that changes the observation, e.g. MuJoCo's
``exclude_current_positions_from_observation=False``, falls back to the generic description of the
spaces). :func:`build_messages` assembles the chat and :func:`extract_code` takes the program out
of the answer.
"""

from __future__ import annotations

import re

import gymnasium as gym

from envs.cards import EnvCard, cards
from envs.cards import describe_space as _space  # the generic one-line description of a space

SIGNATURE = '''\
import numpy as np

def compute_reward(obs, action, next_obs):
    """Batched reward: every argument has a leading batch axis B.

    obs, next_obs: float arrays (B, *obs_shape), the state before and after the action.
    action: (B,) integers for discrete actions, (B, action_dim) floats for continuous ones.
    Returns (reward, components): reward a float array of shape (B,), components a dict of
    named float arrays of shape (B,) whose sum (or weighted sum) is the reward.
    """
    ...
    return reward, components'''

RULES = """\
Rules:
- Only `import numpy as np` and `import math` are allowed; no other imports, no file, network or OS access.
- Work on whole batches with numpy (no Python loop over the batch); return finite floats.
- Put each term of the reward in `components` under a short name, so its effect can be measured.
- Answer with exactly one ```python code block holding the whole program."""

SYSTEM = (
    "You are a reward engineer for reinforcement learning. You write reward functions as short, "
    "vectorised numpy programs that make an agent learn the task quickly and without exploiting "
    "loopholes. The function has this contract:\n\n```python\n" + SIGNATURE + "\n```\n\n" + RULES
)


# --- env descriptions ------------------------------------------------------------------------


def _card_of(spec_id: str) -> EnvCard | None:
    """The env card of a spec id: ``rewardlab/<base>``, or the plain Gymnasium ``<base>`` id."""
    return next((c for c in cards() if spec_id in (c.id, c.base_id)), None)


def describe_env(env: gym.Env, env_name: str = "") -> str:
    """A compact, Pythonic description of ``env``'s observation and action for the prompt.

    Args:
        env: A made env (``envs.make.make_env``); only its spaces and attributes are read.
        env_name: The env config's name, shown as the title.

    Returns:
        Text naming every index of the observation and action where the env's card has a layout
        that fits its observation, otherwise the spaces' shapes and bounds.
    """
    spec_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    title = f"Environment {env_name or spec_id} ({spec_id}).\n"
    card = _card_of(spec_id)
    text = card.describe(env) if card is not None and card.describe is not None else None
    if text is not None:
        return title + text
    return (
        f"{title}No layout is known for this observation; only the spaces:\n"
        f"{_space(env.observation_space, 'obs')}\n{_space(env.action_space, 'action')}"
    )


# --- messages and answers --------------------------------------------------------------------


def build_messages(
    task: str,
    env_description: str,
    examples: list[str] | None = None,
    feedback: str | None = None,
    previous_code: str | None = None,
) -> list[dict[str, str]]:
    """The chat messages asking for a reward program.

    Args:
        task: What the agent should do, in words.
        env_description: :func:`describe_env` of the env.
        examples: Programs shown as examples of the contract (for other tasks or envs; few-shot).
        feedback: What happened to ``previous_code`` (a check's error, or training statistics).
        previous_code: The program the feedback is about.

    Returns:
        ``[{"role": "system", ...}, {"role": "user", ...}]``.
    """
    if not str(task).strip():
        raise ValueError("the task is empty: say in words what the agent should do")
    parts = [env_description.strip(), f"Task: {task.strip()}"]
    for i, example in enumerate(examples or [], 1):
        parts.append(f"Example {i} of a reward program (for another task):\n```python\n{example.strip()}\n```")
    if previous_code:
        parts.append(f"Your previous program:\n```python\n{previous_code.strip()}\n```")
    if feedback:
        parts.append(feedback.strip())
    parts.append("Write compute_reward(obs, action, next_obs) for this task.")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(text: str) -> str | None:
    """The program in a model's answer, or ``None`` when it holds none.

    Prefers a fenced block (```python ... ```; an unclosed last fence counts) that defines
    ``compute_reward``; without fences, takes the text from the first ``import``/``def``/``from``
    line when it defines ``compute_reward``.
    """
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(text or "")]
    defining = [
        body for lang, body in blocks if "def compute_reward" in body and lang in ("", "python", "py", "python3")
    ]
    if defining:
        return _tidy(defining[-1])
    if "def compute_reward" not in (text or ""):
        return None
    lines = text.splitlines()
    start = next(
        (i for i, line in enumerate(lines) if re.match(r"(import |from |def |[A-Z_][A-Z0-9_]* *=)", line)), None
    )
    if start is None:
        return None
    return _tidy("\n".join(lines[start:]))


def _tidy(code: str) -> str:
    return code.strip("\n").rstrip() + "\n"
