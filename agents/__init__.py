"""rewardlab agents, all behind :class:`agents.base.Agent` (``num_steps``, ``train``, ``act``, ``save``, ``load``).

=======================  =======================================================================
config (``agent=``)      agent
=======================  =======================================================================
ppo, a2c, dqn, sac, td3  :class:`agents.sb3.SB3Agent`: stable-baselines3, hyperparameters in
                         ``experiments/conf/agent/<name>.yaml``, per-env values in
                         ``experiments/conf/tuned/<name>/<env>.yaml``
maskable_ppo             :class:`agents.sb3.SB3Agent` with sb3-contrib's MaskablePPO (envs with
                         ``action_masks``; on ``env=jobshop`` the per-job policy of
                         :mod:`agents.jobshop.policy`)
pdr, cpsat               :mod:`agents.jobshop`: dispatching rules and OR-Tools CP-SAT for ``env=jobshop``
iql, bc                  :mod:`agents.offline`: Implicit Q-Learning and behaviour cloning from a dataset
cpl                      :mod:`agents.offline.cpl`: Contrastive Preference Learning from segment preferences
alol, nll, wbc, dpo,     :mod:`agents.text`: a causal LM trained offline on scored responses in the
pro                      ``text-<task>`` envs (A-LoL and variants; SFT, weighted BC, DPO, PRO baselines)
pets                     :mod:`agents.model_based.pets`: PETS, MPC with CEM / iCEM over a learned
                         probabilistic ensemble, planning on the run's reward (continuous actions)
mbpo                     :mod:`agents.model_based.mbpo`: MBPO, SB3's SAC on short rollouts of that
                         ensemble branched from real states (mixed real / model minibatches)
coplanner                :mod:`agents.model_based.coplanner`: COPlanner, MBPO acting by UP-MPC (policy
                         sequences scored by reward -/+ ensemble disagreement: conservative in model
                         rollouts, optimistic in the real env)
=======================  =======================================================================

:mod:`agents.base` holds the interface: the five members, :class:`~agents.base.Requirements` (what an
agent needs of an env and a run, checked before a run starts), the run-derived constructor arguments
(``env``, ``reward``, ``observation_space``, ``action_space``, ``card``, ``seed``, ``device``) and the
optional capabilities as protocols (:class:`~agents.base.Relabels`, :class:`~agents.base.HasReferenceScores`,
:class:`~agents.base.LearnsFromDataset`). Agents are built from their config by
:func:`experiments.builders.build_agent`.
"""

from agents.base import Agent, HasReferenceScores, LearnsFromDataset, Relabels, Requirements, TrainCallback

__all__ = ["Agent", "HasReferenceScores", "LearnsFromDataset", "Relabels", "Requirements", "TrainCallback"]
