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


def test_a_hierarchical_teacher_on_an_env_without_reward_components_is_refused_before_the_run_starts(
    run_cli, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    run = tmp_path / "run"
    res = run_cli(
        "run.py",
        ["env=cartpole", "reward=preference", "reward/teacher=hierarchical", "reward.teacher.ranking=[forward]",
         "steps=2000", f"hydra.run.dir={run}"],
    )  # fmt: skip
    assert res.returncode == 2, res.stderr[-1500:]
    assert "ranks 'forward'" in res.stderr and "components are: none" in res.stderr, res.stderr[-1500:]
    assert not run.exists()  # before: it failed at the first preference round, a run folder without a summary


def test_the_components_check_passes_where_the_env_reports_them() -> None:
    from envs.errors import ConfigError
    from envs.make import make_env
    from rewards.preference.provider import PreferenceReward
    from rewards.preference.teachers import HierarchicalTeacher

    env = make_env({"id": "rewardlab/HalfCheetah-v5"})
    PreferenceReward(teacher=HierarchicalTeacher(ranking=["forward", "ctrl"])).check_env(env)
    with pytest.raises(ConfigError, match=r"ranks 'height'.*components are: ctrl, forward"):
        PreferenceReward(teacher=HierarchicalTeacher(ranking=["forward", "height"])).check_env(env)
    env.close()
