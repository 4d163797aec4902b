"""rewardlab agents, all behind :class:`agents.base.Agent` (``train``, ``act``, ``save``, ``load``).

=====================  ===============================================================
config (``agent=``)    agent
=====================  ===============================================================
ppo, a2c, dqn,         :class:`agents.sb3.SB3Agent` - stable-baselines3, hyperparameters in
sac, td3               ``experiments/conf/agent/<name>.yaml``, per-env values in
                       ``experiments/conf/tuned/<name>/<env>.yaml``
=====================  ===============================================================
"""

from agents.base import Agent, TrainCallback

__all__ = ["Agent", "TrainCallback"]
