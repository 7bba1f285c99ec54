"""The training loop, its config, collapse diagnostics, checkpoint cache and linear probes, on real Two-Room data.

One tiny LeWM is trained once per module (with SIGReg) and one without it (λ = 0); the
tests read both. Frames are 32×32 so the whole file trains in about a minute on one core.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import NaNPixels

import harness.trial.checkpoints as checkpoints
from harness.eval.probes import Ridge, fit_probe, linear_probe, r2_per_dim
from harness.report.results import ConditionRow
from harness.trial.checkpoints import checkpoint_key, load_or_train
from harness.trial.training import (
    TrainConfig,
    TrainingDiverged,
    TrainStats,
    effective_rank,
    latent_diagnostics,
    lr_factor,
    train,
)
from harness.trial.trial import model_diagnostics
from models.registry import build_model
from models.world_model import WorldModel
from tasks.base import make_task
from tasks.data import WindowDataset, cache_root, collect, split_episodes
from tasks.two_room import TwoRoom

IMAGE_SIZE = 32
ACTION_DIM = 10  # frameskip 5 × Two-Room's 2-D action
MODEL_OPTIONS = {"history": 1, "sigreg_directions": 256}  # Two-Room: history 1; M is not sensitive (REFERENCE.md)
CPU_CONFIG = TrainConfig(steps=150, batch_size=32, num_frames=2, lr=2e-3, log_every=50)  # lr: tiny CPU runs need ~1e-3
SEED = 0


@dataclasses.dataclass
class TwoRoomData:
    train: WindowDataset
    test: WindowDataset  # held-out episodes
    key: str


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def two_room(cache_dir) -> TwoRoomData:
    task = make_task("two_room", image_size=IMAGE_SIZE)
    episodes = collect(task, "expert", episodes=200, seed=0, workers=1, progress=False)
    train_episodes, test_episodes = split_episodes(episodes, val_fraction=0.2)
    frameskip = task.default_frameskip
    return TwoRoomData(
        WindowDataset(train_episodes, num_frames=2, frameskip=frameskip),
        WindowDataset(test_episodes, num_frames=2, frameskip=frameskip),
        episodes.key,
    )


def build_tiny(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("lewm", "tiny", IMAGE_SIZE, ACTION_DIM, **{**MODEL_OPTIONS, **overrides})


@pytest.fixture(scope="module")
def trained(two_room) -> tuple[torch.nn.Module, TrainStats, list[dict]]:
    model, records = build_tiny(), []
    stats = train(model, two_room.train, CPU_CONFIG, "cpu", SEED, log_fn=records.append)
    return model, stats, records


@pytest.fixture(scope="module")
def trained_without_sigreg(two_room) -> tuple[torch.nn.Module, TrainStats]:
    model = build_tiny(sigreg_weight=0.0)
    return model, train(model, two_room.train, dataclasses.replace(CPU_CONFIG, steps=100), "cpu", SEED)


def test_training_lowers_the_prediction_loss(trained):
    _, stats, _ = trained
    first, last = stats.history[0], stats.history[-1]
    assert stats.steps == CPU_CONFIG.steps and len(stats.history) == 3
    assert last["pred_loss"] < 0.6 * first["pred_loss"]
    assert stats.final_loss < stats.first_loss
    assert stats.samples_per_s > 0 and stats.seconds > 0


def test_log_fn_receives_every_loss_term_and_collapse_diagnostics(trained):
    _, stats, records = trained
    assert records == stats.history
    assert [record["step"] for record in records] == [50, 100, 150]
    for name in ("loss", "pred_loss", "sigreg", "lr", "samples_per_s", "eff_rank", "latent_std"):
        assert all(math.isfinite(record[name]) for record in records), name
    assert records[-1]["lr"] < records[0]["lr"]  # cosine decay
    assert stats.diagnostics["eff_rank"] == records[-1]["eff_rank"]


def test_sigreg_keeps_latents_spread_and_without_it_they_collapse(trained, trained_without_sigreg):
    """Without SIGReg the prediction loss is met by shrinking every latent to (nearly) one point."""
    _, with_sigreg, _ = trained
    _, without_sigreg = trained_without_sigreg
    assert with_sigreg.diagnostics["eff_rank"] > 4.0
    assert with_sigreg.diagnostics["latent_std"] > 0.3
    assert without_sigreg.diagnostics["latent_std"] < 0.1 * with_sigreg.diagnostics["latent_std"]
    assert without_sigreg.diagnostics["sigreg"] > 2 * with_sigreg.diagnostics["sigreg"]
    assert without_sigreg.history[-1]["pred_loss"] < with_sigreg.history[-1]["pred_loss"]


class RedCentroid(WorldModel):
    """A hand-made encoder whose latent is the agent's pixel centroid: a known answer for the probe."""

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        redness = (pixels[:, :, 0] - pixels[:, :, 1:].mean(dim=2)).clamp_min(0) ** 2  # (B, T, H, W)
        size = pixels.shape[-1]
        grid = torch.arange(size, dtype=pixels.dtype)
        mass = redness.sum(dim=(-2, -1)).clamp_min(1e-6)
        x = (redness.sum(dim=-2) * grid).sum(-1) / mass
        y = (redness.sum(dim=-1) * grid).sum(-1) / mass
        return torch.stack([x, y], dim=-1)[:, :, None]  # (B, T, 1, 2)

    def predict(self, z_hist: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return z_hist

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @property
    def tokens_per_frame(self) -> int:
        return 1


def test_probe_recovers_agent_position_from_latents_that_hold_it(two_room):
    """Frames and states stay aligned through the probe: a centroid encoder gives R² near 1 on held-out episodes."""
    centroid = linear_probe(RedCentroid(), two_room.train, two_room.test, "cpu", max_frames=2000)
    # From noise positions (a sincos grid already carries position: tests/test_lewm_learns.py).
    untrained = linear_probe(
        build_tiny(encoder_pos_init="random"), two_room.train, two_room.test, "cpu", max_frames=2000
    )
    assert centroid["train_frames"] == 2000 and centroid["test_frames"] == 2000
    assert min(centroid["r2_per_dim"]) > 0.95
    assert untrained["r2"] < 0.3


class RedX(RedCentroid):
    """The centroid's x alone: the latent holds one of Two-Room's two state dims."""

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return super().encode(pixels)[..., :1]  # (B, T, 1, 1)


def test_probe_reports_r_and_r2_per_named_quantity_from_the_one_fit(two_room):
    """Two-Room's one quantity, "agent", is every state dim: its figures are the summary's, and finite."""
    probe = linear_probe(
        build_tiny(), two_room.train, two_room.test, "cpu", max_frames=500, quantities=TwoRoom.quantities
    )
    assert list(probe["quantities"]) == ["agent"]
    agent = probe["quantities"]["agent"]
    assert math.isfinite(agent["r2"]) and math.isfinite(agent["pearson_r"]) and -1 <= agent["pearson_r"] <= 1
    assert agent["r2"] == pytest.approx(probe["r2"])
    assert agent["pearson_r"] == pytest.approx(np.mean(probe["pearson_r"]))


def test_each_quantity_is_scored_on_its_own_dims(two_room):
    """A latent holding x only: the quantity "x" reads near 1 and "y" far less, by state dim, whatever is probed."""
    split = {"x": (0,), "y": (1,)}
    probe = linear_probe(RedX(), two_room.train, two_room.test, "cpu", max_frames=1000, quantities=split)
    x, y = probe["quantities"]["x"], probe["quantities"]["y"]
    assert x["r2"] == pytest.approx(probe["r2_per_dim"][0]) and x["pearson_r"] == pytest.approx(probe["pearson_r"][0])
    assert x["r2"] > 0.9 and x["pearson_r"] > 0.95 and y["r2"] < x["r2"] - 0.3
    only_y = linear_probe(
        RedX(), two_room.train, two_room.test, "cpu", max_frames=1000, state_dims=(1,), quantities={"y": (1,)}
    )
    assert only_y["quantities"]["y"]["r2"] == pytest.approx(only_y["r2_per_dim"][0])  # state dim 1 is column 0 here
    unnamed = linear_probe(RedX(), two_room.train, two_room.test, "cpu", max_frames=1000)["quantities"]
    assert list(unnamed) == ["state"] and unnamed["state"]["r2"] == pytest.approx(probe["r2"])  # every dim, one figure
    with pytest.raises(ValueError, match="'x'"):
        linear_probe(RedX(), two_room.train, two_room.test, "cpu", max_frames=1000, state_dims=(1,), quantities=split)


def test_model_diagnostics_fill_the_row_with_the_tasks_named_quantities(two_room):
    """The trial's row fields: one R² and one Pearson r per quantity Two-Room names, beside the summary R²."""
    task = make_task("two_room", image_size=IMAGE_SIZE)
    parts = SimpleNamespace(
        model=build_tiny(),
        task=task,
        windows=two_room.train,
        heldout=two_room.test.episodes,
        protocol=SimpleNamespace(frameskip=5),
    )
    fields = model_diagnostics(parts, SEED, "cpu")
    assert fields["probe_quantities"] == ["agent"]
    assert fields["probe_r2_by_quantity"] == [pytest.approx(fields["probe_r2"])]
    assert len(fields["probe_pearson_r"]) == 1 and -1 <= fields["probe_pearson_r"][0] <= 1
    required = [
        f.name for f in dataclasses.fields(ConditionRow) if f.default is dataclasses.MISSING and f.name != "seed"
    ]
    ConditionRow(**dict.fromkeys(required, ""), seed=SEED, **fields)  # every measured field is a row field


def test_ridge_probe_recovers_a_linear_map_and_scores_noise_near_zero():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(400, 8))
    states = features @ rng.normal(size=(8, 2)) + 0.01 * rng.normal(size=(400, 2))
    ridge, _, _ = fit_probe(features[:300], states[:300])
    assert r2_per_dim(states[300:], ridge.predict(features[300:])).min() > 0.99
    noise_ridge, _, _ = fit_probe(features[:300], rng.normal(size=(300, 2)))
    assert r2_per_dim(rng.normal(size=(100, 2)), noise_ridge.predict(features[300:])).max() < 0.1
    wide = rng.normal(size=(50, 200))  # more features than samples: the dual form
    assert Ridge(1e-3).fit(wide, wide[:, :2]).predict(wide).shape == (50, 2)


def test_latent_diagnostics_tell_gaussian_from_collapsed_latents():
    torch.manual_seed(0)
    gaussian = latent_diagnostics(torch.randn(256, 1, 1, 32))
    collapsed = latent_diagnostics(torch.ones(256, 1, 1, 32) + 1e-4 * torch.randn(256, 1, 1, 32))
    assert gaussian["eff_rank"] > 25 and collapsed["eff_rank"] < 1.1
    assert gaussian["sigreg"] < 3 < 100 < collapsed["sigreg"]
    assert collapsed["latent_std"] < 1e-3 < 0.9 < gaussian["latent_std"]
    assert effective_rank(torch.randn(256, 1) * torch.randn(1, 32)) < 1.1


def test_lr_warms_up_linearly_then_decays_by_cosine():
    factors = [lr_factor(step, 1000, 0.01) for step in range(1000)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[505] == pytest.approx(0.5, abs=0.01)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:], strict=False))


def test_final_loss_does_not_depend_on_the_logging_interval(two_room):
    runs = [train(build_tiny(), two_room.train, dataclasses.replace(CPU_CONFIG, steps=20, log_every=every), "cpu", SEED)
            for every in (1, 20)]  # fmt: skip
    assert runs[0].final_loss == pytest.approx(runs[1].final_loss, rel=1e-5)
    assert len(runs[0].history) == 20 and len(runs[1].history) == 1


def test_nan_loss_raises_training_diverged_with_the_step(two_room):
    with pytest.raises(TrainingDiverged, match="at step 0") as raised:
        train(build_tiny(), NaNPixels(two_room.train), dataclasses.replace(CPU_CONFIG, steps=5), "cpu", SEED)
    assert raised.value.step == 0 and math.isnan(raised.value.value)


def test_train_config_refuses_impossible_values_naming_the_field():
    impossible = {"steps": 0, "batch_size": 0, "lr": 0.0, "weight_decay": -1e-3, "warmup_frac": 1.5,
                  "grad_clip": -1.0, "log_every": 0, "num_workers": -1, "num_frames": 1}  # fmt: skip
    for name, value in impossible.items():
        with pytest.raises(ValueError, match=f"train.{name} must"):
            TrainConfig(**{name: value})
    assert TrainConfig(warmup_frac=0.0, grad_clip=0.0, weight_decay=0.0).grad_clip == 0.0  # the edges are allowed


def test_train_refuses_windows_of_another_length_than_the_config_says(two_room):
    with pytest.raises(ValueError, match="num_frames is 4, but the dataset's windows hold 2 frames"):
        train(build_tiny(), two_room.train, dataclasses.replace(CPU_CONFIG, num_frames=4), "cpu", SEED)


def test_checkpoint_key_follows_what_changes_the_weights():
    def key_of(model_config=None, size="tiny", dataset="data", cfg=CPU_CONFIG, seed=SEED, image_size=IMAGE_SIZE,
               world_size=1) -> str:  # fmt: skip
        model_config = model_config or {"history": 1}
        return checkpoint_key("lewm", size, image_size, ACTION_DIM, model_config, dataset, cfg, seed, world_size)

    key = key_of()
    assert key == key_of()
    # Bookkeeping never changes the weights, so it never changes the key.
    assert key == key_of(cfg=dataclasses.replace(CPU_CONFIG, log_every=7, num_workers=2))
    changed = [
        key_of(model_config={"history": 3}),
        key_of(size="paper"),
        key_of(dataset="other"),
        key_of(cfg=dataclasses.replace(CPU_CONFIG, lr=1e-4)),
        key_of(cfg=dataclasses.replace(CPU_CONFIG, num_frames=4)),  # other windows of the same episodes
        key_of(seed=SEED + 1),
        key_of(image_size=64),
        key_of(world_size=2),  # a different batch split
    ]
    assert key not in changed and len(set(changed)) == len(changed)


def test_checkpoint_cache_never_trains_the_same_request_twice(two_room, monkeypatch):
    config = dataclasses.replace(CPU_CONFIG, steps=3, log_every=1)
    request = ("lewm", "tiny", IMAGE_SIZE, ACTION_DIM, MODEL_OPTIONS, two_room.train, two_room.key, config, SEED, "cpu")
    first_model, first_stats = load_or_train(*request)
    resolved = dataclasses.asdict(first_model.config)  # the preset with MODEL_OPTIONS applied
    assert resolved["history"] == MODEL_OPTIONS["history"] and resolved["encoder_pos_init"] == "sincos"
    key = checkpoint_key("lewm", "tiny", IMAGE_SIZE, ACTION_DIM, resolved, two_room.key, config, SEED)
    assert (cache_root() / "checkpoints" / f"{key}.pt").is_file()

    def train_must_not_run(*args, **kwargs):
        raise AssertionError("load_or_train trained a model it had already cached")

    monkeypatch.setattr(checkpoints, "train", train_must_not_run)
    second_model, second_stats = load_or_train(*request)
    assert second_stats == first_stats
    assert not second_model.training
    for name, tensor in first_model.state_dict().items():
        torch.testing.assert_close(second_model.state_dict()[name], tensor)


def test_the_key_alone_determines_the_trained_weights_whatever_the_callers_rng(two_room):
    """load_or_train seeds before it builds the model, so a retrained checkpoint is bit-identical."""
    config = dataclasses.replace(CPU_CONFIG, steps=2, log_every=1)
    request = ("lewm", "tiny", IMAGE_SIZE, ACTION_DIM, MODEL_OPTIONS, two_room.train, two_room.key, config, SEED, "cpu")
    first_model, _ = load_or_train(*request)
    resolved = dataclasses.asdict(first_model.config)
    key = checkpoint_key("lewm", "tiny", IMAGE_SIZE, ACTION_DIM, resolved, two_room.key, config, SEED)
    (cache_root() / "checkpoints" / f"{key}.pt").unlink()
    torch.manual_seed(12345)
    second_model, _ = load_or_train(*request)
    for name, tensor in first_model.state_dict().items():
        assert torch.equal(second_model.state_dict()[name], tensor), name


def test_random_shift_moves_every_frame_of_a_window_by_one_offset_within_the_pad():
    from harness.trial.training import random_shift

    torch.manual_seed(0)
    height = width = 12
    rows = torch.arange(height, dtype=torch.float32)[:, None].expand(height, width)
    cols = torch.arange(width, dtype=torch.float32)[None, :].expand(height, width)
    frame = torch.stack([rows, cols, rows * 100 + cols])  # (3, H, W): each pixel names its place
    pixels = torch.stack([frame + 1000 * t for t in range(3)])[None].repeat(64, 1, 1, 1, 1)  # (B, T, 3, H, W)
    shifted = random_shift(pixels, pad=2)
    assert shifted.shape == pixels.shape
    offsets = set()
    for window, original in zip(shifted, pixels, strict=True):
        # The centre pixel (away from the replicated border) says where the crop came from.
        dy, dx = (window[0, :2, 6, 6] - original[0, :2, 6, 6]).long().tolist()
        assert abs(dy) <= 2 and abs(dx) <= 2
        for t in range(3):  # every frame of the window moved by the same offset
            assert torch.equal(window[t, :, 4:8, 4:8], original[t, :, 4 + dy : 8 + dy, 4 + dx : 8 + dx])
        offsets.add((dy, dx))
    assert len(offsets) > 10  # windows get their own offsets


def test_shift_augmentation_is_in_the_checkpoint_key_and_trial_id_only_when_on():
    from pathlib import Path

    from harness.sweep.config import expand_trials, load_sweep

    def key(cfg: TrainConfig) -> str:
        return checkpoint_key("lewm", "tiny", 32, 10, {}, "data", cfg, seed=0)

    base = TrainConfig(steps=10)
    assert key(base) != key(dataclasses.replace(base, shift_augment=4))
    sweep = Path(__file__).parent / "data" / "tiny_sweep.yaml"
    plain, augmented = (expand_trials(load_sweep(sweep, extra))[0] for extra in ([], ["train.shift_augment=4"]))
    assert plain.trial_id != augmented.trial_id
