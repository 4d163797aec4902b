"""Environments: registration, Gymnasium's env checker, frame sizes, MiniGrid observation and success."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs.cards import card, cards
from envs.errors import ConfigError
from envs.make import make_env, make_vec_env
from envs.minigrid import OneHotObs, make_minigrid
from experiments.cli import CONF_DIR, group_choices

ALL_IDS = [c.id for c in cards() if "jobshop" not in c.features]  # jobshop: tests/test_jobshop.py
MUJOCO_IDS = [c.id for c in cards() if c.entry_point == "envs.mujoco:make_mujoco"]
LOCOMOTION_IDS = [i for i in MUJOCO_IDS if "InvertedPendulum" not in i]  # robots that travel


def test_every_env_config_names_a_registered_id() -> None:
    from omegaconf import OmegaConf

    names = group_choices("env")
    assert len(names) == 16
    ids = {OmegaConf.load(CONF_DIR / "env" / f"{n}.yaml").id for n in names}
    assert ids == {*ALL_IDS, "rewardlab/JobShop-v0"} == set(envs.registered_ids())


@pytest.mark.filterwarnings("ignore:.*different from the unwrapped version")
@pytest.mark.filterwarnings("ignore:.*observation space (minimum|maximum) value is")
@pytest.mark.parametrize("env_id", ALL_IDS)
def test_check_env(env_id: str) -> None:
    assert card(env_id).id == env_id  # every registered id has its card
    env = gym.make(env_id, render_mode="rgb_array")
    try:
        # Gymnasium's render check opens "human" windows (GLFW / pygame); rgb_array is checked below.
        check_env(env, skip_render_check=True)
        obs, _ = env.reset(seed=0)
        assert env.observation_space.contains(obs)
        frame = env.render()
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    finally:
        env.close()


@pytest.mark.parametrize(
    "env_id,width,height",
    [
        ("rewardlab/CartPole-v1", 160, 96),
        ("rewardlab/Pendulum-v1", 128, 64),
        ("rewardlab/HalfCheetah-v5", 96, 80),
        ("rewardlab/MiniGrid-KeyCorridorS3R1-v0", 112, 112),
    ],
)
def test_render_size_is_configurable(env_id: str, width: int, height: int) -> None:
    env = gym.make(env_id, render_mode="rgb_array", render_width=width, render_height=height)
    try:
        env.reset(seed=0)
        assert env.render().shape == (height, width, 3)
        env.step(env.action_space.sample())
        assert env.render().shape == (height, width, 3)
    finally:
        env.close()


def test_pad_fit_keeps_the_aspect_ratio() -> None:
    from envs.rendering import resize_frame

    frame = np.full((30, 60, 3), 200, dtype=np.uint8)
    out = resize_frame(frame, 40, 40, fit="pad")
    assert out.shape == (40, 40, 3)
    assert (out[:10] == 0).all() and (out[-10:] == 0).all() and (out[10:30] == 200).all()


def test_mujoco_fast_render_flags_are_applied() -> None:
    import mujoco

    env = gym.make("rewardlab/Hopper-v5", render_mode="rgb_array", render_width=64, render_height=64)
    try:
        env.reset(seed=0)
        env.render()
        viewer = env.unwrapped.mujoco_renderer._get_viewer("rgb_array")
        assert viewer.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] == 0
        assert viewer.scn.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] == 0
        assert viewer.scn.flags[mujoco.mjtRndFlag.mjRND_SKYBOX] == 0
    finally:
        env.close()
    pretty = gym.make("rewardlab/Hopper-v5", render_mode="rgb_array", render_width=64, render_height=64, shadows=True)
    try:
        pretty.reset(seed=0)
        pretty.render()
        viewer = pretty.unwrapped.mujoco_renderer._get_viewer("rgb_array")
        assert viewer.scn.flags[mujoco.mjtRndFlag.mjRND_SHADOW] == 1
    finally:
        pretty.close()


def _robot_pixels(frame: np.ndarray) -> float:
    """Fraction of orange/pink pixels (the robot; floor and background are grey, green, black)."""
    f = frame.astype(int)
    return float(((f[..., 0] - f[..., 2]) > 60).mean())


@pytest.mark.parametrize("env_id", LOCOMOTION_IDS)
def test_mujoco_camera_follows_the_robot(env_id: str) -> None:
    env = gym.make(env_id, render_mode="rgb_array", render_width=96, render_height=96)
    try:
        env.reset(seed=0)
        at_start = _robot_pixels(env.render())
        assert at_start > 0.0005
        base = env.unwrapped
        for _ in range(100):  # carry the robot 50 m forward, as a fast policy would
            qpos = base.data.qpos.copy()
            qpos[0] += 0.5
            base.set_state(qpos, base.data.qvel.copy())
            frame = env.render()
        assert _robot_pixels(frame) > 0.5 * at_start  # Gymnasium's own camera would show empty floor
        assert (frame[-10:] > 0).mean() > 0.5  # and the floor is still drawn under it
    finally:
        env.close()


def test_render_options_do_not_change_the_physics() -> None:
    def trajectory(**kwargs: object) -> np.ndarray:
        env = gym.make("rewardlab/HalfCheetah-v5", render_mode="rgb_array", render_width=32, render_height=32, **kwargs)
        env.reset(seed=0)
        env.action_space.seed(0)
        out = []
        for _ in range(30):
            out.append(env.step(env.action_space.sample())[0])
            env.render()
        env.close()
        return np.array(out)

    np.testing.assert_array_equal(trajectory(), trajectory(infinite_floor=False, camera_name=None, shadows=True))


def test_minigrid_one_hot_matches_the_dict_observation() -> None:
    import minigrid  # noqa: F401  (registers MiniGrid's own ids; alone, no other test has imported it yet)

    raw = gym.make("MiniGrid-DoorKey-5x5-v0")
    wrapped = OneHotObs(gym.make("MiniGrid-DoorKey-5x5-v0"))
    obs_dict, _ = raw.reset(seed=3)
    obs_vec, _ = wrapped.reset(seed=3)
    assert obs_vec.shape == (7 * 7 * 20 + 4,) and obs_vec.dtype == np.float32
    cells = obs_vec[: 7 * 7 * 20].reshape(7 * 7, 20)
    image = obs_dict["image"].reshape(7 * 7, 3)
    np.testing.assert_array_equal(cells[:, :11].argmax(1), image[:, 0])
    np.testing.assert_array_equal(cells[:, 11:17].argmax(1), image[:, 1])
    np.testing.assert_array_equal(cells[:, 17:].argmax(1), image[:, 2])
    assert cells.sum() == 7 * 7 * 3
    assert obs_vec[-4:].argmax() == obs_dict["direction"] and obs_vec[-4:].sum() == 1


def test_minigrid_success_on_reaching_the_goal_and_not_on_timeout() -> None:
    env = make_minigrid("MiniGrid-Empty-5x5-v0")
    env.reset(seed=0)
    forward, right = 2, 1  # agent starts at (1, 1) facing east; goal at (3, 3)
    info: dict = {}
    for action in (forward, forward, right, forward, forward):
        _, reward, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    assert terminated and reward > 0 and info["success"] is True

    slow = make_minigrid("MiniGrid-Empty-5x5-v0", max_steps=3)
    slow.reset(seed=0)
    for _ in range(3):
        _, _, terminated, truncated, info = slow.step(0)
    assert truncated and not terminated and info["success"] is False


def test_unknown_id_and_bad_kwargs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not registered"):
        make_env({"name": "x", "id": "rewardlab/Nope-v0"})
    with pytest.raises(ConfigError, match="rejected kwargs"):
        make_env({"name": "cartpole", "id": "rewardlab/CartPole-v1", "kwargs": {"no_such_arg": 1}})
    with pytest.raises(ConfigError, match=r"env\.vec"):
        make_vec_env({"name": "cartpole", "id": "rewardlab/CartPole-v1", "vec": "threads"}, 2, 0)


def test_frames_in_info_hold_the_terminal_frame_before_auto_reset() -> None:
    cfg = {"name": "cartpole", "id": "rewardlab/CartPole-v1", "render": {"width": 64, "height": 48}}
    venv = make_vec_env(cfg, n_envs=2, seed=0, extras={"frame"})
    venv.reset()
    for _ in range(200):
        _, _, dones, infos = venv.step(np.array([0, 0]))  # always push left: falls within ~10 steps
        assert all(info["frame"].shape == (48, 64, 3) for info in infos)
        if dones.any():
            break
    i = int(np.flatnonzero(dones)[0])
    terminal_frame = infos[i]["frame"]
    reset_frame = venv.env_method("render", indices=[i])[0]
    assert not np.array_equal(terminal_frame, reset_frame)  # the pole is drawn fallen, not upright
    venv.close()


def test_subproc_vector_env_builds_registered_envs() -> None:
    cfg = {"name": "cartpole", "id": "rewardlab/CartPole-v1", "vec": "subproc"}
    venv = make_vec_env(cfg, n_envs=2, seed=5)
    obs = venv.reset()
    assert obs.shape == (2, 4)
    venv.close()


def test_an_optimiser_after_a_mujoco_frame_does_not_crash_the_process() -> None:
    """torch 2.14.1 with Mesa's EGL: loading triton (the first optimiser does) after a MuJoCo frame segfaulted
    (exit 139); envs.mujoco loads it before the first frame. In a subprocess, since the failure kills it."""
    import os
    import subprocess
    import sys

    code = (
        "import torch\n"
        "from envs.make import make_env\n"
        "env = make_env({'name': 'hc', 'id': 'rewardlab/HalfCheetah-v5', 'render': {'width': 32, 'height': 32}})\n"
        "env.reset(seed=0)\n"
        "assert env.render().shape == (32, 32, 3)\n"
        "torch.optim.Adam([torch.zeros(1, requires_grad=True)])\n"
        "print('ok')\n"
    )
    from tests.helpers import REPO as root
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "MUJOCO_GL": "egl"},
    )  # fmt: skip
    assert res.returncode == 0 and "ok" in res.stdout, (res.returncode, res.stderr[-1000:])
