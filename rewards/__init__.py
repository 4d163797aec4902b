"""rewardlab reward providers, the reward wrapper, and reward analysis.

=====================  ==============================================================
config (``reward=``)   provider
=====================  ==============================================================
env                    :class:`rewards.env.EnvReward` - the env's own reward (ground truth)
fn                     :class:`rewards.fn.FnReward` - a trusted hand-written function
=====================  ==============================================================

The interface is :class:`rewards.base.RewardProvider` (a batch of transitions in, ``(batch,)``
rewards out); :class:`rewards.wrapper.RewardVecEnv` puts any provider between an env and an agent.
Heavy dependencies are imported inside the provider modules, so ``import rewards`` stays fast.
"""

from rewards.base import RewardProvider, TransitionBatch

__all__ = ["RewardProvider", "TransitionBatch"]
