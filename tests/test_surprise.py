"""Violation of expectation: impossible events are what they claim, and a trained LeWM is surprised by them."""

import logging
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import harness.trial.trial as trial
from harness.eval.surprise import auroc, evaluate_surprise, surprise_by_event
from harness.report.results import ConditionRow, load, write_trial
from harness.trial.checkpoints import load_or_train
from harness.trial.training import TrainConfig
from models.registry import build_model
from tasks.data import WindowDataset, collect
from tasks.events import EVENTS, ImpossibleEvents, impossible_events
from tasks.two_room import AGENT_RGB, TwoRoom

FRAMESKIP = 5  # LeWM's on Two-Room
TASK = TwoRoom(image_size=32)


@pytest.fixture(scope="module")
def heldout(cache_dir):
    return collect(TASK, "expert", 16, None, seed=1_000_003, noise=0.3, workers=1, progress=False)


@pytest.fixture(scope="module")
def lewm(cache_dir):
    """A tiny LeWM trained briefly on Two-Room (once per module; cached across the session)."""
    data = collect(TASK, "expert", 64, None, seed=0, noise=0.3, workers=1, progress=False)
    windows = WindowDataset(data, num_frames=4, frameskip=FRAMESKIP)
    config = TrainConfig(steps=150, batch_size=16, lr=2e-3, log_every=50)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: one thread is as fast, and far faster on a shared machine
    try:
        model, _ = load_or_train("lewm", "tiny", 32, 2 * FRAMESKIP, {"history": 1}, windows, data.key, config, 0, "cpu")
    finally:
        torch.set_num_threads(threads)
    return model


def agent_centre(frame: np.ndarray, background: np.ndarray) -> np.ndarray:
    rows, cols = np.nonzero(np.any(frame != background, axis=-1))
    return np.array([cols.mean(), rows.mean()])  # (x, y) in pixels


def sequence(heldout, index: int = 0):
    count = heldout.steps // FRAMESKIP
    frames = heldout.pixels[index, : count * FRAMESKIP + 1 : FRAMESKIP]
    states = heldout.states[index, : count * FRAMESKIP + 1 : FRAMESKIP]
    actions = heldout.actions[index, : count * FRAMESKIP].reshape(count, FRAMESKIP, -1)
    return frames, states, actions


def test_two_room_events_edit_the_sequence_from_the_event_frame_on(heldout):
    frames, states, actions = sequence(heldout)
    events = impossible_events(TASK, heldout.states.reshape(-1, 2))
    background = events.renderer.background_uint8
    step = 8
    rng = np.random.default_rng(0)
    units = TASK.image_size / TASK.geometry.world_size  # pixels per world unit
    for event in ("teleport", "vanish", "colour_swap"):
        twin = events.inject(event, frames, states, actions, step, rng)
        assert np.array_equal(twin[:step], frames[:step]), event  # the past is untouched
        assert not np.array_equal(twin[step], frames[step]), event
    teleported = events.inject("teleport", frames, states, actions, step, rng)
    jump = np.linalg.norm(agent_centre(teleported[step], background) - agent_centre(frames[step], background))
    assert jump >= events.teleport_min_distance * TASK.geometry.world_size * units - 1
    assert np.array_equal(
        events.inject("vanish", frames, states, actions, step, rng)[step:],
        np.broadcast_to(background, frames[step:].shape),
    )
    recoloured = events.inject("colour_swap", frames, states, actions, step, rng)[step]
    assert agent_centre(recoloured, background) == pytest.approx(agent_centre(frames[step], background), abs=0.3)
    was_agent = np.abs(frames[step].astype(int) - AGENT_RGB).sum(-1) < 30  # the disc's fully covered pixels
    assert was_agent.any()
    assert np.all(np.abs(recoloured[was_agent].astype(int) - events.swapped_rgb).sum(-1) < 30)  # now blue ...
    assert not np.any(np.abs(recoloured.astype(int) - AGENT_RGB).sum(-1) < 30)  # ... and nowhere red


def test_pass_through_wall_mirrors_the_agent_across_the_wall_beside_the_door(heldout):
    events = impossible_events(TASK, heldout.states.reshape(-1, 2))
    g = TASK.geometry
    for index in range(len(heldout)):
        frames, states, actions = sequence(heldout, index)
        step = events.choose_step("pass_through_wall", states, 1, len(states) - 2, np.random.default_rng(0))
        if step is None:
            continue
        twin = events.inject("pass_through_wall", frames, states, actions, step, np.random.default_rng(0))
        x, y = states[step]
        assert not g.door_low <= y <= g.door_high  # not level with the door
        expected = TASK.render(np.array([[g.world_size - x, y]], dtype=np.float32))[0]
        assert np.array_equal(twin[step], expected)  # the same height, on the other side of the wall
        return
    pytest.fail("no held-out sequence came near the wall")


def test_auroc_is_the_fraction_of_positive_negative_pairs_ranked_right():
    rng = np.random.default_rng(0)
    positives, negatives = rng.normal(1, 1, 30), np.concatenate([rng.normal(0, 1, 40), [0.5, 0.5]])
    pairs = (positives[:, None] > negatives[None]).mean() + 0.5 * (positives[:, None] == negatives[None]).mean()
    assert auroc(positives, negatives) == pytest.approx(pairs)
    assert auroc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0


def test_trained_lewm_is_surprised_by_teleports_and_an_untrained_one_is_not(lewm, heldout):
    figures = evaluate_surprise(lewm, TASK, heldout, seed=0, frameskip=FRAMESKIP)
    assert figures["surprise_auroc_teleport"] > 0.75
    assert figures["surprise_p_teleport"] < 0.01  # LeWM's published criterion
    assert figures["surprise_delay_teleport"] < 1.0  # flagged at the event frame, in most sequences
    for event in EVENTS:
        assert 0 <= figures[f"surprise_auroc_{event}"] <= 1 and figures[f"surprise_n_{event}"] > 0
    torch.manual_seed(0)
    untrained = build_model("lewm", "tiny", 32, 2 * FRAMESKIP, history=1).eval()
    baseline = evaluate_surprise(untrained, TASK, heldout, events=("teleport",), seed=0, frameskip=FRAMESKIP)
    assert baseline["surprise_auroc_teleport"] < figures["surprise_auroc_teleport"] - 0.15


def test_events_a_task_lacks_are_skipped_with_a_reason(heldout, monkeypatch, caplog):
    monkeypatch.setattr(TwoRoom, "events_class", ImpossibleEvents)  # Two-Room as a task with only a teleport
    torch.manual_seed(0)
    model = build_model("lewm", "tiny", 32, 2 * FRAMESKIP, history=1).eval()
    with caplog.at_level(logging.INFO, logger="harness.eval.surprise"):
        figures = evaluate_surprise(model, TASK, heldout, events=("teleport", "vanish"), frameskip=FRAMESKIP)
    assert "surprise_auroc_teleport" in figures and "surprise_auroc_vanish" not in figures
    assert "has no 'vanish' event" in caplog.text
    assert figures["surprise_auroc"] == figures["surprise_auroc_teleport"]
    assert surprise_by_event(figures) == {  # a trial row's columns: one entry per event evaluated
        "surprise_events": ["teleport"],
        "surprise_auroc_by_event": [figures["surprise_auroc_teleport"]],
        "surprise_p_by_event": [figures["surprise_p_teleport"]],
    }
    with pytest.raises(ValueError, match="unknown event 'melt'"):
        evaluate_surprise(model, TASK, heldout, events=("melt",), frameskip=FRAMESKIP)


def test_a_models_rows_carry_auroc_and_the_paired_test_per_event(tmp_path, monkeypatch):
    """The trial's diagnostics put every event surprise scored into its rows, and Parquet keeps them."""
    figures = {"surprise_auroc": 0.7, "surprise_auroc_teleport": 0.9, "surprise_p_teleport": 1e-4}
    figures |= {"surprise_auroc_colour_swap": 0.5, "surprise_p_colour_swap": 0.4}
    monkeypatch.setattr(trial, "evaluate_surprise", lambda *args, **kwargs: figures)
    monkeypatch.setattr(trial, "linear_probe", lambda *args, **kwargs: {"r2": 0.5, "quantities": {}})
    monkeypatch.setattr(trial, "WindowDataset", lambda *args, **kwargs: None)
    parts = SimpleNamespace(
        windows=SimpleNamespace(num_frames=4, scaler=None), heldout=None, model=None,
        protocol=SimpleNamespace(frameskip=5), task=SimpleNamespace(quantities={}),
    )  # fmt: skip
    fields = trial.model_diagnostics(parts, 0, "cpu")
    assert fields["surprise_events"] == ["teleport", "colour_swap"]  # in EVENTS' order
    assert fields["surprise_auroc_by_event"] == [0.9, 0.5] and fields["surprise_p_by_event"] == [1e-4, 0.4]
    row = ConditionRow(
        sweep="s", trial_id="t", status="ok", task="cube", model="lewm", role="model", variant="", seed=0,
        config="{}", protocol="{}", protocol_hash="h", **fields,
    )  # fmt: skip
    write_trial(str(tmp_path), "t", [row], [])
    loaded = load(str(tmp_path)).iloc[0]
    assert list(loaded["surprise_events"]) == ["teleport", "colour_swap"]
    assert list(loaded["surprise_p_by_event"]) == [1e-4, 0.4]
