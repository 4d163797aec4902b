"""What the language model is told: the contract, the env in a few Pythonic lines, the task, feedback.

Text2Reward's idea: instead of the env's source (Eureka) or a prose description, give the model a
compact, Pythonic map of the observation and action arrays, names to indices, plus the facts a
reward needs (termination conditions, what the actions do). :func:`describe_env` has a layout for
every env family in the repository (classic control, MuJoCo v5 locomotion, MiniGrid with the
one-hot observation of :mod:`envs.minigrid`, job-shop scheduling); a layout is used only when it
matches the observation's shape (a kwarg that changes the observation, e.g. MuJoCo's
``exclude_current_positions_from_observation=False``, falls back to the generic description of the
spaces). :func:`build_messages` assembles the chat and :func:`extract_code` takes the program out
of the answer.
"""

from __future__ import annotations

import re

import gymnasium as gym
import numpy as np

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

_CLASSIC = {
    "CartPole": (
        4,
        "obs[:, 0]  cart position x (m); the episode ends when |x| > 2.4\n"
        "obs[:, 1]  cart velocity (m/s)\n"
        "obs[:, 2]  pole angle from upright (rad, positive = leaning right); the episode ends when |angle| > 0.2095\n"
        "obs[:, 3]  pole angular velocity (rad/s)",
        "action[:]  0 = push the cart left, 1 = push it right (force 10 N)",
        "The episode also ends after 500 steps. 50 steps per second.",
    ),
    "Pendulum": (
        3,
        "obs[:, 0]  cos(theta)   (theta = 0: pendulum upright; theta = pi: hanging down)\n"
        "obs[:, 1]  sin(theta)\n"
        "obs[:, 2]  angular velocity theta_dot (rad/s), in [-8, 8]",
        "action[:, 0]  torque on the joint, in [-2, 2]",
        "Episodes last 200 steps and never end early; the pendulum starts at a random angle. dt = 0.05 s.",
    ),
}

_MUJOCO = {
    # base name: (obs size with default kwargs, obs layout, action layout, notes)
    "HalfCheetah": (
        17,
        "obs[:, 0]     z of the torso (m)\n"
        "obs[:, 1]     pitch angle of the torso (rad)\n"
        "obs[:, 2:8]   joint angles: back thigh, back shin, back foot, front thigh, front shin, front foot (rad)\n"
        "obs[:, 8]     forward (x) velocity of the torso (m/s); positive = running forward\n"
        "obs[:, 9]     vertical (z) velocity of the torso (m/s)\n"
        "obs[:, 10]    pitch angular velocity of the torso (rad/s)\n"
        "obs[:, 11:17] joint angular velocities, same order as the angles (rad/s)",
        "action[:, 0:6]  joint torques in [-1, 1]: back thigh, back shin, back foot, front thigh, front shin, front foot",
        "A 2D running robot. Episodes last 1000 steps and never end early. dt = 0.05 s.",
    ),
    "Hopper": (
        11,
        "obs[:, 0]     z (height) of the torso (m), about 1.25 standing\n"
        "obs[:, 1]     pitch angle of the torso (rad)\n"
        "obs[:, 2:5]   joint angles: thigh, leg, foot (rad)\n"
        "obs[:, 5]     forward (x) velocity of the torso (m/s)\n"
        "obs[:, 6]     vertical (z) velocity of the torso (m/s)\n"
        "obs[:, 7]     pitch angular velocity (rad/s)\n"
        "obs[:, 8:11]  joint angular velocities: thigh, leg, foot (rad/s)",
        "action[:, 0:3]  joint torques in [-1, 1]: thigh, leg, foot",
        "A one-legged 2D robot that should hop forward. The episode ends (falls) when the torso height "
        "is <= 0.7, |torso angle| >= 0.2, or any other observation leaves [-100, 100]; at most 1000 steps. dt = 0.008 s.",
    ),
    "Walker2d": (
        17,
        "obs[:, 0]     z (height) of the torso (m)\n"
        "obs[:, 1]     pitch angle of the torso (rad)\n"
        "obs[:, 2:5]   right thigh, leg, foot angles (rad)\n"
        "obs[:, 5:8]   left thigh, leg, foot angles (rad)\n"
        "obs[:, 8]     forward (x) velocity of the torso (m/s)\n"
        "obs[:, 9]     vertical (z) velocity of the torso (m/s)\n"
        "obs[:, 10]    pitch angular velocity (rad/s)\n"
        "obs[:, 11:17] joint angular velocities, same order as the angles (rad/s)",
        "action[:, 0:6]  joint torques in [-1, 1]: right thigh, leg, foot, left thigh, leg, foot",
        "A two-legged 2D robot that should walk forward. The episode ends when the torso height leaves "
        "(0.8, 2.0) or |torso angle| >= 1; at most 1000 steps. dt = 0.008 s.",
    ),
    "Ant": (
        105,
        "obs[:, 0]       z (height) of the torso (m)\n"
        "obs[:, 1:5]     torso orientation quaternion (w, x, y, z)\n"
        "obs[:, 5:13]    hip and ankle angles of the 4 legs (rad)\n"
        "obs[:, 13:16]   torso velocity x, y, z (m/s); x = forward\n"
        "obs[:, 16:19]   torso angular velocity (rad/s)\n"
        "obs[:, 19:27]   joint angular velocities (rad/s)\n"
        "obs[:, 27:105]  contact forces on the 13 bodies (6 per body)",
        "action[:, 0:8]  hip and ankle torques in [-1, 1]",
        "A four-legged 3D robot. The episode ends when the torso height leaves [0.2, 1.0]; at most 1000 steps. dt = 0.05 s.",
    ),
    "Humanoid": (
        348,
        "obs[:, 0]        z (height) of the torso (m), about 1.4 standing\n"
        "obs[:, 1:5]      torso orientation quaternion (w, x, y, z)\n"
        "obs[:, 5:22]     joint angles (abdomen, hips, knees, shoulders, elbows) (rad)\n"
        "obs[:, 22:25]    torso velocity x, y, z (m/s); x = forward\n"
        "obs[:, 25:28]    torso angular velocity (rad/s)\n"
        "obs[:, 28:45]    joint angular velocities (rad/s)\n"
        "obs[:, 45:348]   body inertias, body velocities, actuator forces and contact forces",
        "action[:, 0:17]  joint torques in [-0.4, 0.4]",
        "A 3D humanoid. The episode ends when the torso height leaves [1.0, 2.0]; at most 1000 steps. dt = 0.015 s.",
    ),
}

_MINIGRID_OBJECTS = "unseen empty wall floor door key ball box goal lava agent".split()
_MINIGRID_COLORS = "red green blue purple yellow grey".split()
_MINIGRID_STATES = "open closed locked".split()
_MINIGRID_ACTIONS = "0 turn left, 1 turn right, 2 move forward, 3 pick up, 4 drop, 5 toggle (open a door; needs the key of its colour if locked), 6 done"


def _minigrid(env: gym.Env, n: int) -> str | None:
    view = int(getattr(env.unwrapped, "agent_view_size", 7))
    cells = view * view
    if n != cells * 20 + 4:
        return None
    mission = str(getattr(env.unwrapped, "mission", "")).strip()
    size = f"{env.unwrapped.width}x{env.unwrapped.height}" if hasattr(env.unwrapped, "width") else "?"
    objects = ", ".join(f"{i} {o}" for i, o in enumerate(_MINIGRID_OBJECTS))
    colors = ", ".join(f"{i} {c}" for i, c in enumerate(_MINIGRID_COLORS))
    states = ", ".join(f"{i} {s}" for i, s in enumerate(_MINIGRID_STATES))
    return (
        f"A {size} grid world seen from the agent (MiniGrid); mission: {mission!r}.\n"
        f"obs: float array (B, {n}) of 0/1 values, one-hot:\n"
        f"  grid = obs[:, :{cells * 20}].reshape(B, {view}, {view}, 20)   # grid[:, i, j]: the cell i columns from the left,\n"
        f"      # j rows from the top of the agent's {view}x{view} view. The agent is at grid[:, {view // 2}, {view - 1}],\n"
        f"      # facing up: grid[:, {view // 2}, {view - 2}] is the cell in front of it. Walls block the view (unseen).\n"
        f"  grid[..., 0:11]   object type: {objects}\n"
        f"  grid[..., 11:17]  colour: {colors}\n"
        f"  grid[..., 17:20]  door state: {states}\n"
        f"  The object the agent carries is shown in its own cell, grid[:, {view // 2}, {view - 1}].\n"
        f"  obs[:, {cells * 20}:{n}]  the agent's direction, one-hot (0 east, 1 south, 2 west, 3 north)\n"
        f"action: (B,) integers: {_MINIGRID_ACTIONS}.\n"
        f"The episode ends when the agent steps on the goal (success) or after {getattr(env.unwrapped, 'max_steps', '?')} steps."
    )


def _jobshop(env: gym.Env, shape: tuple[int, ...]) -> str:
    from envs.jobshop.env import N_FEATURES

    rows = shape[0]
    return (
        "Job-shop scheduling as dispatching: each step the agent picks a job, and that job's next operation "
        "is placed in the schedule as early as its machine allows. The goal is a short makespan (the end of "
        "the last operation).\n"
        f"obs: float array (B, {rows}, {N_FEATURES}), one row per job (finished or padded jobs: all zeros);\n"
        "  t0 = earliest start over all jobs, d_max = longest operation, m = operations per job:\n"
        "obs[:, j, 0]   1 if job j has operations left\n"
        "obs[:, j, 1]   duration of its next operation / d_max\n"
        "obs[:, j, 2]   work left, next operation included / (m d_max)\n"
        "obs[:, j, 3]   operations left / m\n"
        "obs[:, j, 4]   work done, next operation included / (m d_max)\n"
        "obs[:, j, 5]   time the job is free - t0, / d_max\n"
        "obs[:, j, 6]   earliest start of its next operation if dispatched now - t0, / d_max\n"
        "obs[:, j, 7]   idle wait that start implies (column 6 - column 5)\n"
        "obs[:, j, 8]   unscheduled work on the next operation's machine / (m d_max)\n"
        "obs[:, j, 9]   slack: current makespan lower bound - this job's lower bound, / (m d_max)\n"
        "obs[:, j, 10]  increase of the makespan lower bound if job j is dispatched now / d_max\n"
        "obs[:, j, 11]  fraction of all operations scheduled\n"
        f"action: (B,) integers, the job index in [0, {rows}); only jobs with column 0 == 1 are chosen.\n"
        "Use np.take_along_axis(obs, action[:, None, None], axis=1)[:, 0] for the chosen job's row in obs.\n"
        "The episode ends when every operation is scheduled."
    )


def _space(space: gym.Space, name: str) -> str:
    if isinstance(space, gym.spaces.Discrete):
        return f"{name}: (B,) integers in [{space.start}, {space.start + space.n})"
    if isinstance(space, gym.spaces.Box):
        low, high = np.unique(space.low), np.unique(space.high)
        bounds = f"in [{low[0]:g}, {high[0]:g}]" if len(low) == 1 and len(high) == 1 else "with per-dimension bounds"
        return f"{name}: float array (B, {', '.join(map(str, space.shape))}) {bounds}"
    return f"{name}: {space}"


def describe_env(env: gym.Env, env_name: str = "") -> str:
    """A compact, Pythonic description of ``env``'s observation and action for the prompt.

    Args:
        env: A made env (``envs.make.make_env``); only its spaces and attributes are read.
        env_name: The env config's name, shown as the title.

    Returns:
        Text naming every index of the observation and action where the env family is known,
        otherwise the spaces' shapes and bounds.
    """
    spec_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    obs_space, act_space = env.observation_space, env.action_space
    shape = tuple(obs_space.shape or ())
    title = f"Environment {env_name or spec_id} ({spec_id}).\n"
    family = next((k for k in (*_CLASSIC, *_MUJOCO) if k.lower() in spec_id.lower()), None)
    if family is not None:
        size, obs_text, act_text, notes = {**_CLASSIC, **_MUJOCO}[family]
        if shape == (size,):
            return (
                f"{title}{notes}\nobs: float array (B, {size}):\n{_indent(obs_text)}\n"
                f"{_space(act_space, 'action')}:\n{_indent(act_text)}"
            )
    if "minigrid" in spec_id.lower() and len(shape) == 1:
        text = _minigrid(env, shape[0])
        if text is not None:
            return title + text
    if "jobshop" in spec_id.lower() and len(shape) == 2:
        return title + _jobshop(env, shape)
    return (
        f"{title}No layout is known for this observation; only the spaces:\n"
        f"{_space(obs_space, 'obs')}\n{_space(act_space, 'action')}"
    )


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


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
