"""Tracking through Ray Tune's logger callbacks: ``tracking: wandb`` leaves one offline W&B run per trial,
named by its trial id, grouped by sweep, holding the trial's spec, its training curves and its evaluation.

W&B writes an offline run as ``run-<id>.wandb``: LevelDB-log records in 32 KiB blocks, each with a 7-byte
header (CRC32 of type and data, length, type), each a ``wandb_internal_pb2.Record`` protobuf. wandb no
longer ships a Python reader (its core is Go), so :func:`wandb_records` reads the format here.
"""

import json
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.report import results
from harness.sweep import runner, tracking
from harness.sweep.config import ConfigError, expand_trials, load_sweep

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny_sweep.yaml"
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> Iterator:
    """Every record of a W&B run file, checksums verified."""
    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    assert raw[:4] == b":W&B", f"{path} is not a W&B run file"
    position, pending = 7, b""  # the file header: ":W&B", a 2-byte magic and a version byte
    while position + 7 <= len(raw):
        if BLOCK - position % BLOCK < 7:  # a block's tail too short for a header is padding
            position += BLOCK - position % BLOCK
            continue
        checksum, length, kind = struct.unpack("<IHB", raw[position : position + 7])
        if kind == 0:  # zero padding to the block's end
            position += BLOCK - position % BLOCK
            continue
        data = raw[position + 7 : position + 7 + length]
        assert zlib.crc32(bytes([kind]) + data) == checksum, f"{path}: a damaged record at byte {position}"
        position += 7 + length
        pending = data if kind in (FULL, FIRST) else pending + data
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def read_run(folder: Path) -> dict:
    """An offline run folder's name, group, config and history (one dict per logged step)."""
    (path,) = folder.glob("run-*.wandb")
    run: dict = {"history": []}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run["name"], run["group"] = record.run.display_name, record.run.run_group
            run["config"] = {item.key: json.loads(item.value_json) for item in record.run.config.update}
        elif kind == "history":
            run["history"].append(
                {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
            )
    return run


def test_tracking_must_name_a_known_tracker_before_ray_starts():
    with pytest.raises(ConfigError, match=r"tracking must be one of none, tensorboard, wandb, mlflow, got 'neptune'"):
        load_sweep(TINY, ["tracking=neptune"])
    assert load_sweep(TINY).tracking == "none"


def test_a_tracker_whose_package_is_missing_is_refused_naming_the_install(monkeypatch):
    monkeypatch.setitem(tracking.PACKAGES, "wandb", "no_such_package_for_wmbench")
    with pytest.raises(ConfigError, match=r"tracking: wandb needs the no_such_package_for_wmbench package.*\[track\]"):
        tracking.check_tracking(load_sweep(TINY, ["tracking=wandb"]))


def test_each_tracker_is_one_logger_callback_beside_tunes_own_csv_and_json(tmp_path, monkeypatch):
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    def loggers(tracker: str) -> list[str]:
        sweep = load_sweep(TINY, [f"tracking={tracker}", f"results_dir={tmp_path}"])
        return [type(c).__name__ for c in tracking.logger_callbacks(sweep, str(tmp_path), spec_of=None)]

    monkeypatch.delenv("WANDB_MODE", raising=False)  # the wandb callback sets it for the process
    tune_own = [CSVLoggerCallback.__name__, JsonLoggerCallback.__name__]
    assert loggers("none") == tune_own
    assert loggers("tensorboard") == [*tune_own, TBXLoggerCallback.__name__]
    assert loggers("wandb")[:2] == tune_own and len(loggers("wandb")) == 3 and os.environ["WANDB_MODE"] == "offline"
    monkeypatch.delenv(tracking.AUTO_LOGGERS, raising=False)
    with tracking.only_these_loggers():  # Tune adds no TBX logger of its own (none means none)
        assert os.environ[tracking.AUTO_LOGGERS] == "1"
    assert tracking.AUTO_LOGGERS not in os.environ  # and later Tune runs in the process are as before


def test_a_tune_trial_and_its_folder_are_named_by_its_trial_id_and_a_searched_sample_by_its_own():
    from ray.tune.experiment import Trial

    space = "search.space={train.lr: {loguniform: [0.0001, 0.01]}}"
    (base,) = expand_trials(load_sweep(TINY, ["models=[{name: lewm, size: tiny}]", space]))
    naming = runner._trial_naming({base.trial_id: base})
    trial = Trial("_trainable", config={"trial_id": base.trial_id}, stub=True, **naming)
    assert str(trial) == trial.custom_dirname == base.trial_id  # the W&B run name, the TensorBoard folder
    sample = {"trial_id": base.trial_id, "searched": {"train.lr": 0.003}}
    searched = Trial("_trainable", config=sample, stub=True, **naming)
    assert str(searched) == base.with_values({"train.lr": 0.003}).trial_id != base.trial_id
    assert searched.custom_dirname == f"{searched}_{searched.trial_id}"  # a repeated sample gets a folder of its own


def test_a_trial_on_a_cached_checkpoint_reports_the_curves_of_the_training_that_made_it(cache_dir):
    from harness.trial.parts import build_trial

    (spec,) = expand_trials(load_sweep(TINY, ["models=[{name: lewm, size: tiny}]"]))
    first, again = [], []  # the first build may train or find the checkpoint; the second finds it
    build_trial(spec, report=first.append)
    build_trial(spec, report=again.append)
    first, again = ([m for m in reported if "train/loss" in m] for reported in (first, again))
    assert [m["train/step"] for m in again] == [5, 10, 15] and again == first
    assert again[-1]["progress/step"] == 15 and again[-1]["progress/loss"] == again[-1]["train/loss"]


def test_wandb_tracking_leaves_an_offline_run_per_trial_with_its_curves(finished_tiny_sweep):
    out = finished_tiny_sweep.results  # the tiny sweep with tracking=wandb, offline by default
    rows = results.load(str(out))
    runs = {run["name"]: run for run in map(read_run, sorted((out / "wandb").glob("offline-run-*")))}
    assert sorted(runs) == sorted(rows["trial_id"].unique())  # one run per trial, named by its trial id
    for trial_id, run in runs.items():
        assert run["group"] == "tiny" and run["config"]["sweep"] == "tiny"  # grouped by sweep; the spec as config
        assert run["config"]["model"]["name"] in trial_id
        logged = {key for step in run["history"] for key in step}
        assert not any(key.startswith("progress/") for key in logged)  # the display's events stay out
        for condition in ("clean", "action_noise=0.2"):  # every condition's evaluation, as the rows have it
            key = f"eval/{condition}/success_rate"
            (figure,) = [step[key] for step in run["history"] if key in step]
            assert figure == rows.set_index(["trial_id", "condition"]).loc[(trial_id, condition), "success_rate"]
    lewm = next(run for name, run in runs.items() if "-lewm-" in name)
    curves = {}
    for step in lewm["history"]:
        for key, value in step.items():
            curves.setdefault(key, []).append(value)
    # Every loss term and collapse diagnostic of training, at each log_every (5) of the 15 steps.
    for name in ("loss", "pred_loss", "sigreg", "eff_rank", "latent_std", "lr", "samples_per_s"):
        assert len(curves[f"train/{name}"]) == 3, name
    assert curves["train/step"] == [5, 10, 15]
    lewm_rows = rows[rows["model"] == "lewm"]
    assert curves["train/eff_rank"][-1] == pytest.approx(lewm_rows["latent_eff_rank"].iloc[0])
