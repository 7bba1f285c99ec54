"""A sweep whose driver is SIGKILLed mid-sweep resumes without loss or duplicates (real Ray Tune, real training).

Its own file, apart from test_sweep.py: the suite runs files on two pytest-xdist workers, and the two files
take about as long each.
"""

import os
import signal
import subprocess
import sys
import time

from conftest import REPO, TINY_SWEEP

from harness.report import results


def test_interrupted_sweep_resumes_without_loss_or_duplicates(tmp_path, cache_dir, tiny_sweep):
    out = tmp_path / "results"
    overrides = [f"results_dir={out}", "seeds=[0,1]", "train.steps=60"]
    env = {**os.environ, "WMBENCH_CACHE": str(cache_dir)}
    driver = subprocess.Popen(
        [sys.executable, "-m", "harness.run", str(TINY_SWEEP), *overrides, "--no-leaderboard"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and not list((out / "trials").glob("*.parquet")):
        time.sleep(0.5)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and its Ray processes die mid-sweep
    driver.wait()
    finished_before = len(list((out / "trials").glob("*.parquet")))
    assert 1 <= finished_before < 4, "the kill should land mid-sweep"
    resumed = tiny_sweep(*overrides, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = results.load(str(out))
    assert rows["trial_id"].nunique() == 4  # 2 models × 2 seeds
    assert len(rows) == 8 and not rows.duplicated(["trial_id", "condition"]).any()
