"""The sweep runner end to end: real Ray Tune, real training, Parquet rows, resume, failures."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from harness.report import leaderboard, results
from tasks import ray_cluster

REPO = Path(__file__).resolve().parents[1]


def test_two_trial_sweep_writes_complete_rows(tmp_path, tiny_sweep, finished_tiny_sweep):
    out = shutil.copytree(finished_tiny_sweep.results, tmp_path / "results")
    rows = results.load(str(out))
    assert sorted(rows["model"].unique()) == ["lewm", "random"]
    assert len(rows) == 4  # 2 trials × 2 conditions
    assert set(rows["status"]) == {"ok"}
    assert set(rows["condition"]) == {"clean", "action_noise=0.2"}
    assert rows["success_rate"].between(0, 1).all()
    assert (rows["success_ci_low"] <= rows["success_rate"]).all()
    assert (rows["episodes"] == 4).all()
    lewm = rows[rows["model"] == "lewm"].iloc[0]
    assert lewm["tokens_per_frame"] == 1 and lewm["num_params"] > 0 and lewm["train_steps"] == 15
    assert lewm["plan_ms_median"] > 0 and lewm["device"].startswith("cpu")
    # Each trial process, started by Ray, ran with the allocator setting the driver gives every worker.
    assert set(rows["malloc_tunables"]) == {ray_cluster.worker_env()["GLIBC_TUNABLES"]} != {""}
    for column in ("git_sha", "versions", "config", "protocol", "protocol_hash", "node", "dataset_key"):
        assert rows[column].str.len().gt(0).all(), column
    # The file schema is exactly the declared one, and episode rows aggregate to the condition rows.
    files = sorted((out / "trials").glob("*.parquet"))
    assert len(files) == 2 and pq.read_schema(files[0]).names == results.CONDITION_SCHEMA.names
    episodes = results.load(str(out), "episodes")
    assert len(episodes) == 2 * 2 * 4
    by_condition = episodes.groupby(["trial_id", "condition"])["success"].mean()
    for _, row in rows.iterrows():
        assert by_condition[(row["trial_id"], row["condition"])] == row["success_rate"]
    # Matched controls: every condition and model ran the same cases, start and goal alike (not just their seeds).
    ordered = episodes.sort_values("episode")
    cases = ordered.groupby(["trial_id", "condition"]).apply(
        lambda group: tuple(zip(group["case_seed"], map(tuple, group["start"]), map(tuple, group["goal"]), strict=True))
    )
    assert cases.nunique() == 1 and len({tuple(start) for start in ordered["start"]}) > 1
    assert not list(out.rglob("*.tmp-*")), "no temp files are left behind"
    # A rerun refuses to touch finished results; --resume finds nothing to do and starts no Ray.
    again = tiny_sweep(f"results_dir={out}")
    assert again.returncode == 2 and "--resume" in again.stderr
    resumed = tiny_sweep(f"results_dir={out}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "0 to run" in resumed.stdout and len(results.load(str(out))) == 4
    # A damaged result is named and left out of every statistic, and --resume makes it whole again.
    random_trial = next(f.stem for f in files if "-random-" in f.name)
    damaged = out / "episodes" / f"{random_trial}.parquet"
    intact = pq.read_table(damaged).to_pandas()
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    board = leaderboard.build(out)
    assert list(board.left_out) == [random_trial] and "cannot be read" in board.left_out[random_trial]
    assert set(board.conditions["model"]) == {"lewm"} and any(random_trial in w for w in board.warnings)
    assert random_trial in leaderboard.to_markdown(board)
    repaired = tiny_sweep(f"results_dir={out}", "--resume")
    assert repaired.returncode == 0, repaired.stderr[-2000:]
    assert "1 to run" in repaired.stdout and f"running {random_trial} again" in repaired.stderr
    again_rows = pq.read_table(damaged).to_pandas()
    for column in ("case_seed", "success", "final_distance", "condition"):
        assert again_rows[column].tolist() == intact[column].tolist(), column
    assert len(results.load(str(out))) == 4 and not leaderboard.build(out).left_out
    # A row re-runs from its own fields (config JSON, cached data and checkpoint) to the same figure.
    lewm_file = next(f for f in files if "-lewm-" in f.name)
    env = {**os.environ, "WMBENCH_CACHE": str(finished_tiny_sweep.cache)}  # the data and checkpoint it made
    rerun = subprocess.run([sys.executable, "-m", "harness.run", "--from-row", str(lewm_file), "1"],
                           capture_output=True, text=True, cwd=REPO, env=env, timeout=300)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    recorded = pq.read_table(lewm_file).to_pandas().iloc[1]
    assert f"recorded success {recorded['success_rate']:.3f}" in rerun.stdout
    assert f"re-run {recorded['success_rate']:.3f}: reproduces" in rerun.stdout


def test_failing_trial_becomes_a_failed_row_and_the_sweep_goes_on(tmp_path, tiny_sweep):
    out = tmp_path / "results"
    # A learning rate no check can refuse beforehand, that makes LeWM's loss diverge inside its trial.
    result = tiny_sweep(f"results_dir={out}", "train.lr=1e30", "--strict")
    assert result.returncode == 1 and "FAILED" in result.stderr  # --strict: failures make the exit non-zero
    rows = results.load(str(out))
    failed = rows[rows["status"] == "failed"]
    assert list(failed["model"]) == ["lewm"] and "TrainingDiverged" in failed["error"].iloc[0]
    # A bad model override is refused before Ray starts, naming the field.
    refused = tiny_sweep(f"results_dir={tmp_path / 'refused'}", "models.0.overrides={no_such_field: 1}")
    assert (
        refused.returncode == 2 and "no_such_field" in refused.stderr and not (tmp_path / "refused" / "trials").exists()
    )
    assert set(rows[rows["status"] == "ok"]["model"]) == {"random"}  # the other trial completed


def test_a_trial_bigger_than_the_local_machine_exits_2_naming_the_key(tmp_path, tiny_sweep):
    out = tmp_path / "results"
    result = tiny_sweep(f"results_dir={out}", "resources.cpu=512")
    assert result.returncode == 2 and "resources.cpu is 512" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "trials").exists() or not list((out / "trials").iterdir())


def test_the_leaderboard_command_prints_what_it_writes_and_names_a_missing_folder(
    tmp_path, finished_tiny_sweep, harness_cli
):
    out = shutil.copytree(finished_tiny_sweep.results, tmp_path / "results")
    board = harness_cli("leaderboard", out, timeout=120)
    assert board.returncode == 0, board.stderr[-2000:]
    written = (out / "leaderboard" / "leaderboard.md").read_text(encoding="utf-8")
    assert board.stdout.strip() == written.strip() and "random" in written
    missing = harness_cli("leaderboard", tmp_path / "nothing", timeout=120)
    assert missing.returncode == 2 and "nothing" in missing.stderr and "Traceback" not in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_a_second_driver_on_the_same_results_folder_exits_naming_the_first(tmp_path, tiny_sweep):
    import fcntl

    out = tmp_path / "results"
    out.mkdir()
    with open(out / ".driver.lock", "w") as lock:  # the first driver, mid-sweep
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("pid 12345 on elsewhere")
        lock.flush()
        second = tiny_sweep(f"results_dir={out}")
    assert second.returncode == 2 and "another driver (pid 12345 on elsewhere)" in second.stderr
    assert not (out / "trials").exists()  # it ran nothing
