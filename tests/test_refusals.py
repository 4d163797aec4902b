"""Input that cannot work is refused before the run directory exists (issue 19, item 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

PROGRAMS = {
    "wrong_shape": "import numpy as np\n\ndef compute_reward(obs, action, next_obs):\n"
    "    r = np.ones((obs.shape[0], 2))\n    return r, {'ones': r[:, 0]}\n",
    "endless": "import numpy as np\n\ndef compute_reward(obs, action, next_obs):\n"
    "    while True:\n        pass\n",
}


@pytest.mark.parametrize("name,message", [("wrong_shape", "fails the smoke check.*shape"), ("endless", "fails the smoke check")])
def test_a_reward_program_that_fails_the_checks_is_refused_before_the_run_starts(
    name: str, message: str, run_cli, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    import re

    program = tmp_path / f"{name}.py"
    program.write_text(PROGRAMS[name])
    run = tmp_path / "run"
    res = run_cli(
        "run.py",
        ["env=cartpole", "reward=code", f"reward.source={program}", "reward.limits.cpu_s_per_call=0.5",
         "reward.limits.wall_s_per_call=1.5", f"hydra.run.dir={run}"],
    )  # fmt: skip
    assert res.returncode == 2 and re.search(message, res.stderr), res.stderr[-1500:]
    assert not run.exists()  # no run directory left behind (before: a run folder without a summary)
