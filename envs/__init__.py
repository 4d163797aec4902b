"""rewardlab environments: Gymnasium registrations under the ``rewardlab/`` namespace.

Importing this package registers every id below (Gymnasium's lazy string registry: the env
modules are imported only when an env is made). Each registered env renders ``rgb_array``
frames headlessly at a size given by ``render_width`` / ``render_height``.

==========================================  =============================================
id                                          what it is
==========================================  =============================================
rewardlab/CartPole-v1, Pendulum-v1          Gymnasium classic control
rewardlab/{HalfCheetah,Hopper,Walker2d,     Gymnasium MuJoCo v5, fast EGL rendering
Ant,Humanoid}-v5
rewardlab/MiniGrid-{DoorKey-5x5,DoorKey-    MiniGrid with one-hot vector observations
8x8,KeyCorridorS3R1,Unlock,FourRooms}-v0    and ``info["success"]``
rewardlab/JobShop-v0                        job-shop scheduling as dispatching (envs/jobshop/)
==========================================  =============================================

The Hydra configs in ``experiments/conf/env/`` name these ids; :func:`envs.make.make_env` and
:func:`envs.make.make_vec_env` build them from such a config.
"""

from __future__ import annotations

import gymnasium as gym

CLASSIC = ("CartPole-v1", "Pendulum-v1")
MUJOCO = ("HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5", "Humanoid-v5")
MINIGRID = (
    "MiniGrid-DoorKey-5x5-v0",
    "MiniGrid-DoorKey-8x8-v0",
    "MiniGrid-KeyCorridorS3R1-v0",
    "MiniGrid-Unlock-v0",
    "MiniGrid-FourRooms-v0",
)
NAMESPACE = "rewardlab"


def _register(base_ids: tuple[str, ...], entry_point: str) -> None:
    for base_id in base_ids:
        env_id = f"{NAMESPACE}/{base_id}"
        if env_id in gym.registry:
            continue
        gym.register(
            id=env_id,
            entry_point=entry_point,
            kwargs={"base_id": base_id},
            disable_env_checker=True,  # the inner gymnasium.make already checks
        )


_register(CLASSIC, "envs.classic:make_classic")
_register(MUJOCO, "envs.mujoco:make_mujoco")
_register(MINIGRID, "envs.minigrid:make_minigrid")
if f"{NAMESPACE}/JobShop-v0" not in gym.registry:
    gym.register(id=f"{NAMESPACE}/JobShop-v0", entry_point="envs.jobshop.env:make_jobshop")


def registered_ids() -> list[str]:
    """All env ids registered by rewardlab, sorted."""
    return sorted(k for k in gym.registry if k.startswith(NAMESPACE + "/"))
