"""DDP training of one model over two gloo processes: the replicas stay identical and the model learns."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from harness.trial.distributed import enable_sigreg_all_reduce, train_ddp
from harness.trial.training import TrainConfig
from models.registry import build_model
from tasks.base import make_task
from tasks.data import WindowDataset, collect

IMAGE_SIZE, FRAMESKIP = 32, 5


@pytest.fixture(scope="module")
def two_room_windows(cache_dir) -> WindowDataset:
    task = make_task("two_room", image_size=IMAGE_SIZE)
    data = collect(task, "expert", episodes=4, steps=30, seed=0, noise=0.3, workers=1, progress=False)
    return WindowDataset(data, num_frames=4, frameskip=FRAMESKIP)  # 4 episodes × 11 windows


def tiny_lewm():
    """A module-level builder, so it pickles into the spawned processes (with functools.partial)."""
    return functools.partial(build_model, "lewm", "tiny", IMAGE_SIZE, FRAMESKIP * 2, history=1)


def test_two_rank_ddp_training_ends_with_identical_weights(two_room_windows, tmp_path):
    cfg = TrainConfig(steps=4, batch_size=8, lr=1e-3, log_every=2, seed=3)
    state, stats = train_ddp(tiny_lewm(), two_room_windows, cfg, world_size=2, backend="gloo",
                             rank_states_dir=tmp_path)  # fmt: skip
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys() == state.keys()
    for name in state:
        assert torch.equal(ranks[0][name], ranks[1][name]), f"{name} differs between the ranks"
        assert torch.equal(state[name], ranks[0][name])
    # Training moved every parameter away from the seeded initialisation every rank started from.
    torch.manual_seed(cfg.seed)
    initial = dict(tiny_lewm()().named_parameters())
    unmoved = [name for name, value in initial.items() if torch.equal(state[name], value.detach())]
    assert not unmoved, unmoved
    # The returned model loads into a fresh one; rank 0's stats hold the group's log.
    tiny_lewm()().load_state_dict(state)
    assert [record["step"] for record in stats.history] == [2, 4]
    assert stats.steps == 4 and math.isfinite(stats.final_loss) and stats.history[-1]["sigreg"] > 0
    assert {"eff_rank", "latent_std"} <= stats.diagnostics.keys()


def test_ddp_switches_lewm_sigreg_to_the_global_batch():
    model = tiny_lewm()()
    assert model.sigreg.all_reduce is False
    assert enable_sigreg_all_reduce(model) == 1 and model.sigreg.all_reduce is True


def test_ddp_rejects_a_batch_that_does_not_split_evenly(two_room_windows):
    with pytest.raises(ValueError, match="divide evenly over 3 processes"):
        train_ddp(tiny_lewm(), two_room_windows, TrainConfig(steps=1, batch_size=8), world_size=3)
