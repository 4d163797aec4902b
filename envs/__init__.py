"""rewardlab environments: Gymnasium registrations under the ``rewardlab/`` namespace.

Importing this package registers every id below (Gymnasium's lazy string registry: the env
modules' make functions build an env only when it is made). Each registered env renders
``rgb_array`` frames headlessly at a size given by ``render_width`` / ``render_height``.

==========================================  =============================================
id                                          what it is
==========================================  =============================================
rewardlab/CartPole-v1, Pendulum-v1          Gymnasium classic control (envs/classic.py)
rewardlab/{HalfCheetah,Hopper,Walker2d,     Gymnasium MuJoCo v5, fast EGL rendering
Ant,Humanoid}-v5                            (envs/mujoco.py)
rewardlab/MiniGrid-{DoorKey-5x5,DoorKey-    MiniGrid with one-hot vector observations
8x8,KeyCorridorS3R1,Unlock,FourRooms}-v0    and ``info["success"]`` (envs/minigrid.py)
rewardlab/JobShop-v0                        job-shop scheduling as dispatching (envs/jobshop/)
rewardlab/Text{Positive,Helpful}-v0         LM alignment, one prompt -> one response (envs/text.py)
==========================================  =============================================

Each id has one home: its :class:`envs.cards.EnvCard`, defined next to the family's make function
(prompt layout, closed-form reward and termination, scripted policies, features), found with
:func:`envs.cards.card`. A new env is a make function, a card in ``CARDS`` of its module (listed
below) and a config in ``experiments/conf/env/``. The Hydra configs name these ids;
:func:`envs.make.make_env` and :func:`envs.make.make_vec_env` build them from such a config.
"""

from __future__ import annotations

import gymnasium as gym

from envs import cards as _cards
from envs import classic as _classic
from envs import minigrid as _minigrid
from envs import mujoco as _mujoco
from envs import text as _text
from envs.jobshop import env as _jobshop

NAMESPACE = _cards.NAMESPACE

for _card in (*_classic.CARDS, *_mujoco.CARDS, *_minigrid.CARDS, *_jobshop.CARDS, *_text.CARDS):
    _cards.register(_card)
del _card


def registered_ids() -> list[str]:
    """All env ids registered by rewardlab, sorted."""
    return sorted(k for k in gym.registry if k.startswith(NAMESPACE + "/"))
