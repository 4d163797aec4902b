"""PEBBLE's unsupervised pre-training reward: the state entropy of what the agent has seen.

Lee et al. 2021 ("PEBBLE: Feedback-Efficient Interactive Reinforcement Learning via Relabeling
Experience and Unsupervised Pre-training", Section 4.1) let the agent explore before the first
labels with the particle estimate of state entropy (Liu & Abbeel 2021, APT): a state is worth the
distance to its ``k``-th nearest neighbour among the states in the replay buffer,

    r(s) = ||s - s^k|| / std(||s - s^k||)

(the reference code, rll-research/BPref ``agent/sac.py`` ``compute_state_entropy``: ``k = 5``, plain
Euclidean distances on observations, divided by a running std; the paper writes ``log(c + d)``).
States far from everything seen pay the most, so the agent spreads out and the first segments the
teacher compares are diverse.

PEBBLE recomputes the distances for every sampled batch against the whole buffer. Here they are
computed when a transition is scored and recomputed for all states each time their number doubles
(:meth:`StateEntropy.remember` says when: the provider then bumps its ``version`` and an off-policy
buffer is relabelled), which bounds the staleness (at most twice as many states as at the last
recomputation) at a total cost of about twice the last one.
"""

from __future__ import annotations

import numpy as np
import torch


class StateEntropy:
    """The k-NN state-entropy reward over the states seen so far (module docstring).

    Args:
        k: The neighbour whose distance is the reward (PEBBLE's ``topK``).

    Attributes:
        scale: Std of the k-NN distances of all states at the last recomputation (1 before it).
    """

    def __init__(self, k: int = 5) -> None:
        self.k = int(k)
        self._states = np.zeros((0, 0), dtype=np.float32)  # (capacity, obs_dim); the first `used` rows hold states
        self.used = 0
        self.scale = 1.0
        self._refresh_at = 2 * (self.k + 1)

    def reward(self, obs: torch.Tensor) -> torch.Tensor:
        """``(n,)`` the reward of ``(n, *obs_shape)`` states, differentiable in ``obs``.

        The distance to the ``k``-th nearest state seen, one exact match left out (the state itself,
        when it is among them: relabelling a replay buffer), over :attr:`scale`; zero while fewer
        than ``k + 1`` states have been seen.
        """
        x = obs.reshape(obs.shape[0], -1).float()
        if self.used <= self.k:
            return torch.zeros(x.shape[0], device=x.device)
        memory = torch.as_tensor(self._states[: self.used], device=x.device)
        rows = max(1, 2**22 // len(memory))  # distances computed 4M at a time
        out = []
        for s in range(0, x.shape[0], rows):
            d = torch.cdist(x[s : s + rows], memory, compute_mode="donot_use_mm_for_euclid_dist")  # exact 0 for itself
            nearest = torch.topk(d, self.k + 1, dim=1, largest=False).values  # ascending
            has_self = (nearest[:, 0].detach() == 0).long()
            out.append(nearest.gather(1, (self.k - 1 + has_self)[:, None])[:, 0])
        return torch.cat(out) / self.scale

    def remember(self, obs: np.ndarray) -> bool:
        """Add ``(n, *obs_shape)`` states; True when the reward changed (its scale recomputed: their number doubled)."""
        flat = np.asarray(obs, dtype=np.float32).reshape(len(obs), -1)
        need = self.used + len(flat)
        if need > len(self._states) or self._states.shape[1] != flat.shape[1]:  # grow by doubling
            grown = np.zeros((max(need, 2 * len(self._states), 64), flat.shape[1]), dtype=np.float32)
            if self.used:
                grown[: self.used] = self._states[: self.used]
            self._states = grown
        self._states[self.used : need] = flat
        self.used = need
        if need < self._refresh_at:
            return False
        self._refresh_at = 2 * need
        self.scale = 1.0
        with torch.no_grad():
            d = self.reward(torch.as_tensor(self._states[:need]))
        std = float(d.std()) if len(d) > 1 else 0.0
        self.scale = std if std > 1e-8 else 1.0
        return True

    def clear(self) -> None:
        """Forget the states (pre-training is over)."""
        self._states, self.used = np.zeros((0, 0), dtype=np.float32), 0

    def state_dict(self) -> dict[str, object]:
        """Everything needed to continue exactly (the states seen, the scale, the next recomputation)."""
        return {"states": self._states[: self.used].copy(), "scale": self.scale, "refresh_at": self._refresh_at}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what :meth:`state_dict` returned."""
        states = np.asarray(state["states"], dtype=np.float32)
        self._states, self.used = states, len(states)
        self.scale = float(state["scale"])  # type: ignore[arg-type]
        self._refresh_at = int(state["refresh_at"])  # type: ignore[call-overload]
