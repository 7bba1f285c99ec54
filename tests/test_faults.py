"""Faults injected for real and survived, each ending with nothing lost and nothing duplicated (issue 21).

Ctrl-C of the driver, a Ray worker killed while its trial trains, a disk that fills while a result file is
written, a damaged cached checkpoint, and a trial that raises: real Ray, real Parquet, real torch, nothing
mocked. Each test counts the rows before and after, verifies every trial's files and looks for temp files.
Covered elsewhere, and not repeated here: the driver SIGKILLed then ``--resume``, a diverging loss, a damaged
episode file and a second driver (test_sweep.py), a damaged dataset shard (test_data.py), a lost worker node
(test_cluster.py). Each test seeds its trials with a seed of its own, so no test finds another's checkpoint.

A sweep run costs 25-40 s on the shared 2-core machine (Ray's start, a worker importing torch), so by default
only the Ctrl-C test runs sweeps, beside the faults injected in this process; the other sweeps are marked slow
(``pytest -m slow tests/test_faults.py``) to keep this file near 90 s.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import REPO, SWEEP_CONDITIONS, TINY_SWEEP, assert_complete_and_unique, wait_for

from harness.report import leaderboard, results
from harness.sweep.config import expand_trials, load_sweep
from harness.trial.spec import TrialSpec
from harness.trial.trial import execute_trial
from tasks import ray_cluster

SWEEP_TIMEOUT = 420  # seconds; a 2-trial tiny sweep takes ~30 s on an idle 2-core machine, minutes on a busy one
# What an undamaged run must reproduce: the figures of each condition row, and each episode's case and outcome.
CONDITION_FIGURES = ["status", "episodes", "success_rate", "final_distance", "train_steps", "final_loss", "dataset_key"]
EPISODE_FIGURES = ["case_seed", "success", "final_distance", "steps"]
QUICK = "diagnostics=false"  # no probe or surprise: seconds per LeWM trial that no fault here touches


def planned(*overrides: str) -> dict[str, TrialSpec]:
    """The tiny sweep's trials under ``overrides``, by model name, as the driver plans them."""
    return {spec.model.name: spec for spec in expand_trials(load_sweep(TINY_SWEEP, list(overrides)))}


@contextlib.contextmanager
def sweep_driver(logs: Path, *overrides: str, cache: Path) -> Iterator[subprocess.Popen]:
    """The tiny sweep's driver as a user starts it, in a session of its own so that a signal reaches it the way a
    terminal's would; stdout and stderr go to ``logs``.out and ``logs``.err. Killed with its group if left running."""
    # A suite started in the background (`pytest &` from a script) has SIGINT ignored, and a child inherits an
    # ignored signal: the driver would sleep through the Ctrl-C. A handler is not inherited, so while this one
    # is set the driver starts with SIGINT's default action, as from a terminal.
    ignored = signal.signal(signal.SIGINT, signal.default_int_handler)
    with open(logs.with_suffix(".out"), "w") as stdout, open(logs.with_suffix(".err"), "w") as stderr:
        try:
            driver = subprocess.Popen(
                [sys.executable, "-m", "harness", "run", str(TINY_SWEEP), *overrides, "--no-leaderboard"],
                cwd=REPO, env={**os.environ, "WMBENCH_CACHE": str(cache)}, stdout=stdout, stderr=stderr,
                start_new_session=True,
            )  # fmt: skip
        finally:
            signal.signal(signal.SIGINT, ignored)
    try:
        yield driver
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait()


def output(logs: Path) -> tuple[str, str]:
    return logs.with_suffix(".out").read_text(), logs.with_suffix(".err").read_text()


def descendants(pid: int) -> list[int]:
    """Every process started by ``pid``, or by those, read from /proc: a sweep's driver, its Ray and its workers."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):  # the process ended meanwhile
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], list(children.get(pid, []))
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def training_worker(driver: subprocess.Popen, trial_id: str) -> int | None:
    """The pid of the Ray worker of ``driver``'s sweep that trains ``trial_id`` now, if one does.

    Tune runs a trial in a working folder named after it, beside the folder of the result.json it writes as the
    trial reports (Ray 2.x's layout); a worker trains once it has reported a training step.
    """
    for pid in descendants(driver.pid):
        try:
            if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::"):
                continue
            folder = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:  # the process ended meanwhile
            continue
        reported = folder.parent.parent / "driver_artifacts" / folder.name / "result.json"
        if trial_id not in folder.name or not reported.is_file():
            continue
        for line in reported.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # the line Tune is writing now
                continue
            steps = [value for key, value in record.items() if key.rsplit("/", 1)[-1] == "step" and value]
            if record.get("pid") == pid and steps:
                return pid
    return None


def wait_until_trained_by(driver: subprocess.Popen, trial_id: str, besides: int | None = None) -> int:
    """Wait until a Ray worker of ``driver`` (one other than ``besides``) trains ``trial_id``; returns its pid."""
    found: list[int] = []

    def trains() -> bool:
        pid = training_worker(driver, trial_id)
        if pid is not None and pid != besides:
            found.append(pid)
        return bool(found)

    wait_for(trains, SWEEP_TIMEOUT, f"a worker{'' if besides is None else ' other than the first'} trains", driver)
    return found[0]


def kill_worker(pid: int) -> None:
    """SIGKILL one Ray worker process, checked to be one (its command line starts with ``ray::``)."""
    assert Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"ray::"), f"pid {pid} is not a Ray worker"
    os.kill(pid, signal.SIGKILL)


def undamaged_rows(trials: list[TrialSpec], root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(condition rows, episode rows) of ``trials`` run without any fault, here and without Ray (the same trial
    code a Ray worker runs), indexed for comparison."""
    for spec in trials:
        execute_trial(spec, str(root))
    return indexed(root)


def indexed(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    conditions = results.load(str(root)).set_index(["trial_id", "condition"]).sort_index()
    episodes = results.load(str(root), results.EPISODES_DIR).set_index(["trial_id", "condition", "episode"])
    return conditions[CONDITION_FIGURES], episodes.sort_index()[EPISODE_FIGURES]


# --- Ctrl-C of the driver ---------------------------------------------------------------------------


def test_ctrl_c_stops_the_driver_in_one_line_and_resume_runs_every_trial_once(tmp_path, cache_dir, tiny_sweep):
    out, logs = tmp_path / "results", tmp_path / "driver"
    overrides = (f"results_dir={out}", "seeds=[21]", "train.steps=60", QUICK)  # LeWM trains on after random is done
    trials = {name: spec.trial_id for name, spec in planned(*overrides).items()}
    random_rows = out / "trials" / f"{trials['random']}.parquet"
    with sweep_driver(logs, *overrides, cache=cache_dir) as driver:
        wait_for(lambda: results.trial_done(str(out), trials["random"]), SWEEP_TIMEOUT, "random's rows", driver)
        written = random_rows.stat().st_mtime_ns
        os.killpg(driver.pid, signal.SIGINT)  # Ctrl-C: a terminal signals the driver's whole process group
        pressed = time.monotonic()
        late = time.time() - written / 1e9  # how long after random's rows the Ctrl-C went, should this fail
        driver.wait(timeout=60)
        stopped_after = time.monotonic() - pressed
    stdout, stderr = output(logs)
    assert driver.returncode == 130, f"Ctrl-C {late:.1f} s after random's rows\n" + stdout[-2000:] + stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == "interrupted: 1 of 2 trials finished; rerun with --resume"
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr + stdout
    logging.getLogger(__name__).info("the driver stopped %.1f s after Ctrl-C", stopped_after)
    with open(out / ".driver.lock", "a") as lock:  # released: a driver still holding it would make this raise
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(lock, fcntl.LOCK_UN)
    before = results.load(str(out))
    assert len(before) == SWEEP_CONDITIONS and set(before["trial_id"]) == {trials["random"]}
    assert results.verify_trial(str(out), trials["lewm"]) == "not run"  # the interrupted trial left nothing
    assert not list(out.rglob("*.tmp-*"))

    resumed = tiny_sweep(*overrides, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1 finished, 1 to run" in resumed.stdout
    rows = assert_complete_and_unique(out, trials=2)
    assert set(rows["trial_id"]) == set(trials.values())
    assert random_rows.stat().st_mtime_ns == written  # the finished trial was not run again


# --- a Ray worker killed while its trial trains ----------------------------------------------------


@pytest.mark.slow
def test_a_worker_killed_while_its_trial_trains_is_retried_and_its_rows_written_once(tmp_path, cache_dir):
    out, logs = tmp_path / "results", tmp_path / "driver"
    overrides = (f"results_dir={out}", "models=[{name:lewm,size:tiny}]", "seeds=[22]", "train.steps=60", QUICK)
    (trial_id,) = (spec.trial_id for spec in planned(*overrides).values())
    with sweep_driver(logs, *overrides, cache=cache_dir) as driver:  # max_failures: the default, 2
        killed = wait_until_trained_by(driver, trial_id)
        assert not (out / "trials").exists() or not any((out / "trials").iterdir())  # no rows yet
        kill_worker(killed)
        # Ray's FailureConfig starts the trial again in another worker, which trains it from the start.
        wait_until_trained_by(driver, trial_id, besides=killed)
        driver.wait(timeout=SWEEP_TIMEOUT)
    stdout, stderr = output(logs)
    assert driver.returncode == 0, stdout[-2000:] + stderr[-3000:]
    rows = assert_complete_and_unique(out, trials=1)
    assert set(rows["trial_id"]) == {trial_id} and rows["train_steps"].eq(60).all()
    assert "NOT FINISHED" not in stderr


@pytest.mark.slow
def test_without_retries_a_killed_worker_is_a_named_failure_that_resume_runs_again(tmp_path, cache_dir, tiny_sweep):
    out, logs = tmp_path / "results", tmp_path / "driver"
    overrides = (f"results_dir={out}", "seeds=[23]", "train.steps=60", "max_failures=0", QUICK)
    trials = {name: spec.trial_id for name, spec in planned(*overrides).items()}
    with sweep_driver(logs, *overrides, cache=cache_dir) as driver:
        kill_worker(wait_until_trained_by(driver, trials["lewm"]))
        driver.wait(timeout=SWEEP_TIMEOUT)
    stdout, stderr = output(logs)
    assert driver.returncode == 0, stdout[-2000:] + stderr[-3000:]  # without --strict a failed trial does not fail it
    (line,) = [line for line in stderr.splitlines() if line.startswith("NOT FINISHED ")]  # one line names it
    assert line.startswith(f"NOT FINISHED {trials['lewm']}: ActorDiedError: ")
    assert line.endswith("; it wrote no rows, --resume runs it again")
    before = results.load(str(out))
    assert len(before) == SWEEP_CONDITIONS and set(before["trial_id"]) == {trials["random"]}
    assert results.verify_trial(str(out), trials["lewm"]) == "not run" and not list(out.rglob("*.tmp-*"))

    resumed = tiny_sweep(*overrides, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "1 finished, 1 to run" in resumed.stdout
    assert set(assert_complete_and_unique(out, trials=2)["trial_id"]) == set(trials.values())


# --- a disk that fills while a result file is written -----------------------------------------------


@contextlib.contextmanager
def small_disk(folder: Path, size: str) -> Iterator[Callable[[str], None]]:
    """A tmpfs of ``size`` mounted on ``folder``; yields ``resize(size)`` (``"full"``: no byte left)."""
    folder.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("a full disk is simulated with a small tmpfs, and this machine has no mount command")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"a full disk is simulated with a small tmpfs, and mounting one was refused: {mounted.stderr}")

    def resize(new_size: str) -> None:
        if new_size == "full":
            stats = os.statvfs(folder)
            new_size = str((stats.f_blocks - stats.f_bfree) * stats.f_frsize)
        subprocess.run(["mount", "-o", f"remount,size={new_size}", str(folder)], check=True, capture_output=True)

    try:
        yield resize
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=False)


@pytest.mark.slow
def test_a_disk_that_fills_while_rows_are_written_leaves_no_partial_file_and_resume_completes(
    tmp_path, cache_dir, tiny_sweep, one_thread
):
    out, logs = tmp_path / "results", tmp_path / "driver"
    # LeWM trains on after random has written its rows; a full disk stays full, so Ray is not asked to retry.
    overrides = (f"results_dir={out}", "seeds=[24]", "train.steps=60", "max_failures=0", QUICK)
    specs = planned(*overrides)
    trials = {name: spec.trial_id for name, spec in specs.items()}
    with small_disk(out / "trials", "1m") as resize:
        with sweep_driver(logs, *overrides, cache=cache_dir) as driver:
            wait_for(lambda: results.trial_done(str(out), trials["random"]), SWEEP_TIMEOUT, "random's rows", driver)
            resize("full")  # LeWM, still training, finds no room for its rows
            driver.wait(timeout=SWEEP_TIMEOUT)
        stdout, stderr = output(logs)
        assert driver.returncode == 0, stdout[-2000:] + stderr[-3000:]  # without --strict
        # The user reads what failed and why in one line, and that --resume will run it.
        (line,) = [line for line in stderr.splitlines() if line.startswith(f"NOT FINISHED {trials['lewm']}: ")]
        lost = out / "trials" / f"{trials['lewm']}.parquet"
        assert f"ResultsWriteError: cannot write {lost}: " in line and "No space left on device" in line
        assert line.endswith("; it wrote no rows, --resume runs it again")
        # Nothing half-written stands in for the rows, and no statistic counts the trial.
        assert sorted(path.name for path in (out / "trials").iterdir()) == [f"{trials['random']}.parquet"]
        assert not list(out.rglob("*.tmp-*"))
        assert results.verify_trial(str(out), trials["lewm"]) == "not run"
        before = results.load(str(out))
        assert len(before) == SWEEP_CONDITIONS and set(before["trial_id"]) == {trials["random"]}
        assert not (out / "episodes" / f"{trials['lewm']}.parquet").exists()  # its episode rows were taken back
        board = leaderboard.build(out)
        assert set(board.conditions["model"]) == {"random"} and not board.left_out

        resize("1m")  # space freed
        resumed = tiny_sweep(*overrides, "--resume")
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "1 finished, 1 to run" in resumed.stdout
        rows = assert_complete_and_unique(out, trials=2)
        assert set(rows["trial_id"]) == set(trials.values())
        resumed_rows = indexed(out)
    # The same rows as a run the disk never interrupted.
    expected = undamaged_rows(list(specs.values()), tmp_path / "undamaged")
    for got, want in zip(resumed_rows, expected, strict=True):
        pd.testing.assert_frame_equal(got, want, rtol=1e-6)


def test_a_result_file_that_cannot_take_its_place_raises_one_line_and_leaves_none_of_the_trial(tmp_path):
    """The rename step of the atomic write fails (a folder stands at the condition file's path): the temp file
    and the trial's episode rows, already written, are removed; pyarrow removes a file it failed to write itself,
    so this is the failure only the writer's own cleanup covers."""
    trial_id = "two_room-random-s0-0123456789"
    (tmp_path / "trials" / f"{trial_id}.parquet" / "in-the-way").mkdir(parents=True)
    row = results.ConditionRow(sweep="tiny", trial_id=trial_id, status="failed", task="two_room", model="random",
                               role="floor", variant="", seed=0, config="{}", protocol="{}", protocol_hash="",
                               error="RuntimeError: an error to record")  # fmt: skip
    with pytest.raises(results.ResultsWriteError) as raised:
        results.write_trial(str(tmp_path), trial_id, [row], [])
    message = str(raised.value)
    assert message.startswith(f"cannot write {tmp_path}/trials/{trial_id}.parquet: ") and "\n" not in message
    assert not list(tmp_path.rglob("*.tmp-*")) and not (tmp_path / "episodes" / f"{trial_id}.parquet").exists()
    assert results.verify_trial(str(tmp_path), trial_id) == "not run"


# --- a damaged cached checkpoint --------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained_lewm(tmp_path_factory, cache_dir, one_thread):
    """A LeWM trial of the tiny sweep run once here (no Ray): (spec, its rows, its cached checkpoint, the file's
    bytes, the checkpoint's weights)."""
    spec = planned("seeds=[25]", QUICK)["lewm"]
    before = set(cache_dir.glob("checkpoints/*.pt"))
    root = tmp_path_factory.mktemp("trained")
    execute_trial(spec, str(root))
    (checkpoint,) = set(cache_dir.glob("checkpoints/*.pt")) - before
    original = checkpoint.read_bytes()
    return spec, indexed(root), checkpoint, original, torch.load(io.BytesIO(original), weights_only=True)["state_dict"]


def _cut_short(data: bytes, weights: dict[str, torch.Tensor]) -> bytes:
    return data[: len(data) // 2]


def _bytes_flipped_in_a_tensor(data: bytes, weights: dict[str, torch.Tensor]) -> bytes:
    """64 bytes of the largest tensor's data inverted: torch.load reads such a file without complaint."""
    largest = max(weights.values(), key=torch.Tensor.numel)
    start = data.find(largest.numpy().tobytes())
    assert start > 0, "the tensor's bytes are stored as they are in memory"
    garbled = bytearray(data)
    garbled[start : start + 64] = bytes(byte ^ 0xFF for byte in garbled[start : start + 64])
    return bytes(garbled)


def _another_file_in_its_place(data: bytes, weights: dict[str, torch.Tensor]) -> bytes:
    """What a failed download leaves: torch.load raises UnpicklingError, not one of the errors a torch file cut
    short raises."""
    return b"<html><body>404 Not Found</body></html>\n"


@pytest.mark.parametrize("damage", [_cut_short, _bytes_flipped_in_a_tensor, _another_file_in_its_place])
def test_a_damaged_cached_checkpoint_is_trained_again_with_a_warning_never_loaded(
    damage, trained_lewm, tmp_path, caplog
):
    spec, expected, checkpoint, original, weights = trained_lewm
    checkpoint.write_bytes(damage(original, weights))
    with caplog.at_level(logging.WARNING, logger="harness.trial.checkpoints"):
        rows = execute_trial(spec, str(tmp_path))  # the next trial that needs the checkpoint
    warnings = [r.getMessage() for r in caplog.records if r.name == "harness.trial.checkpoints"]
    assert len(warnings) == 1 and f"cached checkpoint {checkpoint} is damaged" in warnings[0], warnings
    assert "training it again" in warnings[0]
    assert [row.status for row in rows] == ["ok"] * SWEEP_CONDITIONS
    # Trained again from the same seed: the same weights, written back whole, and the same rows as before.
    rebuilt = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert rebuilt.keys() == weights.keys() and all(torch.equal(rebuilt[name], weights[name]) for name in weights)
    assert not list(checkpoint.parent.glob(f".{checkpoint.name}.*"))  # no temp file beside it
    for got, want in zip(indexed(tmp_path), expected, strict=True):
        pd.testing.assert_frame_equal(got, want)


# --- a trial that raises ----------------------------------------------------------------------------


@pytest.mark.slow
def test_a_trial_that_raises_becomes_a_failed_row_and_the_other_trials_finish(tmp_path, cache_dir):
    """LeWM's checkpoint cannot be saved where a file stands in the checkpoint folder's place: the config is
    fine, the trial trains, then raises; the random trial needs no checkpoint and finishes."""
    cache, out, logs = tmp_path / "cache", tmp_path / "results", tmp_path / "driver"
    cache.mkdir()
    (cache_dir / "datasets").mkdir(exist_ok=True)
    (cache / "datasets").symlink_to(cache_dir / "datasets")  # the session's data: nothing to collect again
    blocker = cache / "checkpoints"
    blocker.write_text("a file where the checkpoint folder belongs\n")
    overrides = (f"results_dir={out}", "seeds=[26]", QUICK)
    trials = {name: spec.trial_id for name, spec in planned(*overrides).items()}
    with sweep_driver(logs, *overrides, cache=cache) as driver:
        driver.wait(timeout=SWEEP_TIMEOUT)
    stdout, stderr = output(logs)
    assert driver.returncode == 0, stdout[-2000:] + stderr[-3000:]  # without --strict
    assert f"FAILED {trials['lewm']}: FileExistsError: [Errno 17] File exists: '{blocker}'" in stderr
    rows = results.load(str(out))
    assert len(rows) == 1 + SWEEP_CONDITIONS and not rows.duplicated(["trial_id", "condition"]).any()
    failed = rows[rows["status"] == "failed"]
    assert list(failed["trial_id"]) == [trials["lewm"]] and str(blocker) in failed["error"].iloc[0]
    finished = rows[rows["status"] == "ok"]
    assert set(finished["trial_id"]) == {trials["random"]} and len(finished) == SWEEP_CONDITIONS
    assert all(results.verify_trial(str(out), trial_id) is None for trial_id in trials.values())
    assert not list(out.rglob("*.tmp-*")) and blocker.read_text() == "a file where the checkpoint folder belongs\n"


# --- memory pressure --------------------------------------------------------------------------------


def test_collection_under_memory_pressure_fails_in_one_line_instead_of_retrying_forever(tmp_path):
    """Ray's memory monitor told that the node is always full (threshold 1%) kills every collection task. Ray's
    default retries an OOM-killed task without limit, so this driver used to hang; wmbench's drivers bound the
    retries (tasks/ray_cluster.py), and the collector ends with one line, exit 1, and no dataset left behind."""
    cache = tmp_path / "cache"
    env = {**os.environ, "RAY_memory_usage_threshold": "0.01", "RAY_memory_monitor_refresh_ms": "100"}
    env.pop("RAY_task_oom_retries", None)  # the bound under test is wmbench's own
    command = [sys.executable, "-m", "tasks.collect", "two_room", "--episodes", "2", "--steps", "5"]
    command += ["--address", "local", "--cache-dir", str(cache), "--quiet"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=SWEEP_TIMEOUT)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: a collection task failed on Ray: OutOfMemoryError: "), done.stderr[-3000:]
    assert not list(cache.rglob("manifest.json"))


def test_a_ray_failure_is_told_in_one_line_naming_what_the_task_raised():
    """tasks/ray_cluster.one_line, which the sweep's failed trials, a stopped sweep and the collector all report
    through: real Ray exceptions, read through to what the task raised, first line only."""
    import ray.exceptions

    raised = FileExistsError(17, "File exists")
    wrapped = ray.exceptions.RayTaskError("train", "Traceback (most recent call last):\n  ...\nFileExistsError", raised)
    assert ray_cluster.one_line(wrapped) == "FileExistsError: [Errno 17] File exists"
    killed = ray.exceptions.OutOfMemoryError("Task was killed due to the node running low on memory.\nMemory: ...")
    assert ray_cluster.one_line(killed) == "OutOfMemoryError: Task was killed due to the node running low on memory."
    assert ray_cluster.one_line(RuntimeError()) == "RuntimeError"
    trace = "Traceback (most recent call last):\n  File 'x.py', line 1\nValueError: the last line names it\n\n"
    assert ray_cluster.one_line(trace) == "ValueError: the last line names it"
    assert ray_cluster.one_line("") == "an error Ray recorded without text"
