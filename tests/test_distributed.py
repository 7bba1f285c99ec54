"""DDP training through the one loop, over two gloo processes: replicas stay identical, two ranks equal one process."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from conftest import NaNPixels
from einops import rearrange
from torch import nn

from harness.trial.distributed import train_ddp
from harness.trial.training import TrainConfig, TrainingDiverged, enable_sigreg_all_reduce, train
from models.blocks.sigreg import SIGReg
from models.registry import build_model
from models.world_model import WorldModel
from tasks.base import make_task
from tasks.data import WindowDataset, collect

IMAGE_SIZE, FRAMESKIP = 32, 5
ACTION_DIM = 2 * FRAMESKIP  # Two-Room's 2-D action per raw step


@pytest.fixture(scope="module")
def two_room_windows(cache_dir) -> WindowDataset:
    task = make_task("two_room", image_size=IMAGE_SIZE)
    data = collect(task, "expert", episodes=4, steps=30, seed=0, noise=0.3, workers=1, progress=False)
    return WindowDataset(data, num_frames=4, frameskip=FRAMESKIP)  # 4 episodes × 11 windows


def tiny_lewm():
    """A module-level builder, so it pickles into the spawned processes (with functools.partial)."""
    return functools.partial(build_model, "lewm", "tiny", IMAGE_SIZE, ACTION_DIM, history=1)


class LinearWorldModel(WorldModel):
    """A linear encoder and predictor with SIGReg on fixed directions: no BatchNorm, no dropout, no sampling.

    Its loss is a mean over the batch plus a statistic of the whole batch, so a DDP step over
    two halves of a batch must equal one process's step on the whole of it.
    """

    history = 1

    def __init__(self, latent_dim: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Linear(3 * IMAGE_SIZE * IMAGE_SIZE, latent_dim)
        self.predictor = nn.Linear(latent_dim + ACTION_DIM, latent_dim)
        self.sigreg = SIGReg(num_directions=64)

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        flat = rearrange(pixels, "b t c h w -> b t (c h w)")
        return self.encoder(flat)[:, :, None]  # (B, T, 1, D)

    def predict(self, z_hist: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        return self.predictor(torch.cat([z_hist[:, :, 0], actions], dim=-1))[:, :, None]  # (B, T, 1, D)

    def loss(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        z = self.encode(batch["pixels"])  # (B, T, 1, D)
        pred_loss = (self.predict(z[:, :-1], batch["actions"][:, :-1]) - z[:, 1:]).square().mean()
        directions = torch.Generator().manual_seed(0)  # the same on every rank and in every run
        sigreg = self.sigreg(rearrange(z, "b t n d -> t (b n) d"), generator=directions)
        return {"loss": pred_loss + 0.1 * sigreg, "pred_loss": pred_loss, "sigreg": sigreg}

    @property
    def tokens_per_frame(self) -> int:
        return 1


def test_two_rank_ddp_training_ends_with_identical_weights(two_room_windows, tmp_path):
    cfg, seed = TrainConfig(steps=4, batch_size=8, lr=1e-3, log_every=2), 3
    state, stats = train_ddp(tiny_lewm(), two_room_windows, cfg, seed, world_size=2, backend="gloo",
                             rank_states_dir=tmp_path)  # fmt: skip
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys() == state.keys()
    for name in state:
        assert torch.equal(ranks[0][name], ranks[1][name]), f"{name} differs between the ranks"
        assert torch.equal(state[name], ranks[0][name])
    # Training moved every parameter away from the seeded initialisation every rank started from.
    torch.manual_seed(seed)
    initial = dict(tiny_lewm()().named_parameters())
    unmoved = [name for name, value in initial.items() if torch.equal(state[name], value.detach())]
    assert not unmoved, unmoved
    # The returned model loads into a fresh one; rank 0's stats hold the group's log.
    tiny_lewm()().load_state_dict(state)
    assert [record["step"] for record in stats.history] == [2, 4]
    assert stats.steps == 4 and math.isfinite(stats.final_loss) and stats.history[-1]["sigreg"] > 0
    assert {"eff_rank", "latent_std"} <= stats.diagnostics.keys()


def test_two_ranks_on_halves_of_each_batch_train_as_one_process_on_the_whole(two_room_windows):
    """Full-batch steps, so both runs see the same windows: sharding, DDP's gradient average,
    SIGReg's all-reduce and the all-reduced loss log must together reproduce one process."""
    # fp32: the claim is about the split, and bf16 rounds two half batches otherwise than one whole one
    cfg = TrainConfig(steps=5, batch_size=len(two_room_windows), lr=1e-4, log_every=1, bf16=False)
    seed = 3
    state, ddp = train_ddp(LinearWorldModel, two_room_windows, cfg, seed, world_size=2)
    torch.manual_seed(seed)
    model = LinearWorldModel()
    single = train(model, two_room_windows, cfg, "cpu", seed)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(state[name], tensor, rtol=1e-4, atol=1e-5, msg=f"{name} differs")
    for ddp_record, single_record in zip(ddp.history, single.history, strict=True):
        for term in ("loss", "pred_loss"):  # a record's "sigreg" is the diagnostic of rank 0's share
            assert ddp_record[term] == pytest.approx(single_record[term], rel=1e-5), (ddp_record["step"], term)
    assert ddp.history[-1]["loss"] < ddp.history[0]["loss"]


def test_a_diverging_ddp_run_raises_training_diverged_in_the_parent(two_room_windows):
    cfg = TrainConfig(steps=3, batch_size=8, lr=1e-3)
    with pytest.raises(TrainingDiverged, match="at step 0"):
        train_ddp(LinearWorldModel, NaNPixels(two_room_windows), cfg, seed=0, world_size=2)


def test_ddp_switches_lewm_sigreg_to_the_global_batch():
    model = tiny_lewm()()
    assert model.sigreg.all_reduce is False
    assert enable_sigreg_all_reduce(model) == 1 and model.sigreg.all_reduce is True


def test_ddp_rejects_a_batch_that_does_not_split_evenly(two_room_windows):
    with pytest.raises(ValueError, match="divide evenly over 3 processes"):
        train_ddp(tiny_lewm(), two_room_windows, TrainConfig(steps=1, batch_size=8), seed=0, world_size=3)
    with pytest.raises(ValueError, match="fewer than 2 processes"):
        train_ddp(tiny_lewm(), torch.utils.data.Subset(two_room_windows, [0]), TrainConfig(batch_size=2), 0, 2)
