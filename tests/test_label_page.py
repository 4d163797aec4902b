"""The labelling page in a real headless browser (Debian's chromium + chromedriver, driven by Selenium):
a click is saved at once, survives a server restart, and the reward-model trainer reads it."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.errors import ConfigError
from experiments import collect
from experiments.label import LabelSession, make_server
from rewards.preference.model import RewardEnsemble, train_reward_model
from rewards.preference.segments import EQUAL, LEFT, RIGHT, SKIP, PreferencePairs
from tests.helpers import CHROMIUM, DRIVER, browser

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or DRIVER is None, reason="needs Debian's chromium and chromium-driver (.ci/run installs them)"
)


@pytest.fixture
def dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "datasets"))
    collect.main(
        [
            "env=cartpole",
            "policy=random",
            "episodes=6",
            "frames=true",
            "env.render.width=64",
            "env.render.height=48",
            "name=local/cartpole/frames-v0",
        ]
    )
    return "local/cartpole/frames-v0"


class _Served:
    def __init__(self, session: LabelSession) -> None:
        self.server = make_server(session, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _wait_text(driver, element_id: str, text: str, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: text in d.find_element(By.ID, element_id).text)


def test_a_click_is_saved_at_once_and_the_trainer_reads_it(dataset: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    session = LabelSession(dataset, "human", pairs=3, segment=8, seed=0)
    served = _Served(session)
    driver = browser()
    try:
        driver.get(served.url)
        _wait_text(driver, "progress", "0 of 3 answered")
        # the clips are real videos the browser can decode
        WebDriverWait(driver, 20).until(
            lambda d: d.execute_script(
                "return document.getElementById('left').readyState >= 2 && document.getElementById('right').videoWidth == 64"
            )
        )
        driver.find_element(By.ID, "btn-left").click()
        _wait_text(driver, "progress", "1 of 3 answered")
        # saved before the page moved on: the log and the pairs file hold it
        saved = PreferencePairs.load(session.pairs_path)
        assert len(saved) == 1 and saved.labels[0] == LEFT and "human" in saved.teacher
        np.testing.assert_array_equal(saved.left.obs[0], session.left.obs[0])
        driver.find_element(By.ID, "btn-equal").click()
        _wait_text(driver, "progress", "2 of 3 answered")
    finally:
        driver.quit()
        served.stop()

    # the server goes away and comes back: both answers are there, the page asks for pair 3
    session2 = LabelSession(dataset, "human", pairs=3, segment=8, seed=0)
    assert session2.answered == 2 and session2.next_pair() == 2
    served = _Served(session2)
    driver = browser()
    try:
        driver.get(served.url)
        _wait_text(driver, "progress", "2 of 3 answered")
        driver.find_element(By.TAG_NAME, "body").send_keys("\ue014")  # the right-arrow key
        _wait_text(driver, "status", "All pairs answered")
    finally:
        driver.quit()
        served.stop()

    pairs = PreferencePairs.load(session2.pairs_path)
    np.testing.assert_array_equal(pairs.labels, [LEFT, EQUAL, RIGHT])
    # the reward-model trainer reads the person's labels
    import gymnasium as gym

    obs_space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    model = RewardEnsemble(obs_space, gym.spaces.Discrete(2), hidden=(16,), members=2)
    stats = train_reward_model(model, pairs, torch.Generator().manual_seed(0), epochs=200, lr=1e-2)
    assert stats["train_accuracy"] == 1.0  # both decided pairs fitted


def test_bad_answers_and_datasets_without_frames_are_refused(dataset: str, tmp_path: Path) -> None:
    session = LabelSession(dataset, "check", pairs=2, segment=8)
    with pytest.raises(ConfigError, match="must be one of left, right, equal, skip"):
        session.answer(0, "maybe")
    with pytest.raises(ConfigError, match=r"not in 0\.\.1"):
        session.answer(5, "left")
    session.answer(1, "skip")
    assert PreferencePairs.load(session.pairs_path).labels.tolist() == [SKIP]
    collect.main(["env=cartpole", "policy=random", "episodes=1", "name=local/cartpole/noframes-v0"])
    with pytest.raises(ConfigError, match="frames=true"):
        LabelSession("local/cartpole/noframes-v0", "x", pairs=1, segment=4)
