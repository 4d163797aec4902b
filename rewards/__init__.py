"""rewardlab reward providers, the reward wrapper, labelling, and reward analysis.

=====================  ==============================================================================
config (``reward=``)   provider
=====================  ==============================================================================
env                    :class:`rewards.env.EnvReward`: the env's own reward (ground truth; a torch path
                       where the env's card has it in closed form)
fn                     :class:`rewards.fn.FnReward`: a trusted hand-written batched function
shaped                 :class:`rewards.shaped.ShapedReward`: scaled, offset, potential-shaped copies
clip                   :class:`rewards.clip.ClipReward`: VLM-RM, CLIP similarity of frames to a goal
code                   :class:`rewards.code.provider.CodeReward`: a reward program (yours, or written by a
                       language model) in a locked-down sandbox worker
preference             :class:`rewards.preference.provider.PreferenceReward`: a Bradley-Terry ensemble
                       learned from a teacher's preferences, online or from a preference file
=====================  ==============================================================================

:mod:`rewards.base` is the interface (:class:`~rewards.base.RewardProvider`: a
:class:`~rewards.base.TransitionBatch` in, ``(batch,)`` rewards out, with the extras it ``needs``
and an optional torch path; :class:`~rewards.base.LearnedReward` for rewards that learn while the
agent trains). :class:`rewards.wrapper.RewardVecEnv` puts any provider between an env and an agent
(proxy to the agent, true reward kept in ``info``); :mod:`rewards.labels` labels recorded data;
:mod:`rewards.distance` compares rewards (Pearson, Spearman, EPIC). Heavy dependencies are imported
inside the provider modules, so ``import rewards`` stays fast.
"""

from rewards.base import LearnedReward, RewardProvider, TorchRewardFn, TransitionBatch

__all__ = ["LearnedReward", "RewardProvider", "TorchRewardFn", "TransitionBatch"]
