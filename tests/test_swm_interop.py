"""stable-worldmodel interop: the authors' LeWM checkpoints and datasets, read without their library.

The fixtures in tests/fixtures/swm were written by stable-worldmodel 0.1.1 itself
(tests/fixtures/swm/make_fixtures.py, run in a scratch venv): two tiny LeWM checkpoints saved by
their ``save_pretrained`` with their model's outputs on fixed inputs, and four Two-Room episodes
of their own env recorded by their Lance and HDF5 writers with what their readers return.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.sweep.config import expand_trials, load_sweep
from harness.sweep.validate import ConfigError
from harness.trial.spec import TrialSpec
from harness.trial.training import TrainConfig, train
from harness.trial.trial import run_trial
from models.registry import build_model
from tasks import convert_swm
from tasks.base import make_task
from tasks.data import WindowDataset
from tasks.swm_data import SWMDataError, SWMReader, convert, open_converted

FIXTURES = Path(__file__).parent / "fixtures" / "swm"
TWO_ROOM = FIXTURES / "checkpoints" / "lewm_two_room"  # history 1, actions 2 × frameskip 5, 32 px
PROJECTED = FIXTURES / "checkpoints" / "lewm_projected"  # latent 24, predictor width 32, history 3
DATASETS = {"hdf5": FIXTURES / "datasets" / "two_room.h5", "lance": FIXTURES / "datasets" / "two_room.lance"}
TINY = Path(__file__).parent / "data" / "tiny_sweep.yaml"
TOLERANCE = 1e-5

pytestmark = pytest.mark.usefixtures("one_thread")


def load(folder: Path, history: int):
    return build_model("swm_lewm", "tiny", 32, 10, history=history, checkpoint=str(folder)).eval()


def max_differences(model, reference: dict[str, np.ndarray], history: int) -> dict[str, float]:
    """Largest |ours − theirs| of encode, predict and a planning rollout on the recorded inputs."""
    pixels, actions = torch.from_numpy(reference["pixels"]), torch.from_numpy(reference["actions"])
    with torch.no_grad():
        z = model.encode(pixels)  # (B, T, 1, D)
        predicted = model.predict(z[:, :history], actions[:, :history])
        plan, past = torch.from_numpy(reference["plan"]), torch.from_numpy(reference["past_actions"])
        imagined = model.rollout(z[:, :history], plan, past)
    ours = {"emb": z, "pred": predicted, "rollout": imagined}
    return {name: float((ours[name][:, :, 0] - torch.from_numpy(reference[name])).abs().max()) for name in ours}


@pytest.mark.parametrize(("folder", "history"), [(TWO_ROOM, 1), (PROJECTED, 3)], ids=["published", "projected"])
def test_their_checkpoint_encodes_predicts_and_rolls_out_as_their_library_does(folder, history):
    model = load(folder, history)
    differences = max_differences(model, dict(np.load(folder / "reference.npz")), history)
    assert max(differences.values()) < TOLERANCE, differences
    assert model.pretrained and model.describe()["checkpoint_sha256"] and model.tokens_per_frame == 1


def test_transformers_4_parameter_names_load_the_same_encoder(tmp_path):
    """Checkpoints saved under transformers 4 name the ViT's layers encoder.encoder.layer.<i>.attention.attention.*."""
    names = [("attention.q_proj.", "attention.attention.query."), ("attention.k_proj.", "attention.attention.key."),
             ("attention.v_proj.", "attention.attention.value."), ("attention.o_proj.", "attention.output.dense."),
             ("mlp.fc1.", "intermediate.dense."), ("mlp.fc2.", "output.dense.")]  # fmt: skip
    state = torch.load(TWO_ROOM / "weights.pt", weights_only=True)
    renamed = {}
    for key, value in state.items():
        if key.startswith("encoder.layers."):
            key = key.replace("encoder.layers.", "encoder.encoder.layer.")
            for new, old in names:
                key = key.replace(new, old)
        renamed[key] = value
    assert sum(k.startswith("encoder.encoder.layer.") for k in renamed) == 32  # 2 layers × 16
    folder = tmp_path / "hf4"
    folder.mkdir()
    shutil.copy(TWO_ROOM / "config.json", folder)
    torch.save(renamed, folder / "weights.pt")
    differences = max_differences(load(folder, 1), dict(np.load(TWO_ROOM / "reference.npz")), 1)
    assert max(differences.values()) < TOLERANCE, differences


def test_a_vit_hf_encoder_config_reads_as_the_same_architecture(tmp_path):
    """le-wm's released configs build the encoder with stable_pretraining's vit_hf(size, ...) instead of ViTModel."""
    folder = tmp_path / "vit_hf"
    shutil.copytree(TWO_ROOM, folder)
    config = json.loads((folder / "config.json").read_text())
    vit = config["encoder"]["config"]
    sizes = {key: vit[key] for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")}
    config["encoder"] = {"_target_": "stable_pretraining.backbone.utils.vit_hf", "size": "tiny", "patch_size": 8,
                         "image_size": 32, "pretrained": False, "use_mask_token": False, **sizes}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    differences = max_differences(load(folder, 1), dict(np.load(TWO_ROOM / "reference.npz")), 1)
    assert max(differences.values()) < TOLERANCE, differences


def sweep(*overrides: str) -> list:
    return expand_trials(load_sweep(TINY, list(overrides)))


def checkpoint_model(path: Path | str) -> str:
    return f"models=[{{name: swm_lewm, overrides: {{checkpoint: '{path}'}}}}]"


def test_a_missing_or_unfit_checkpoint_is_one_config_error_before_ray(tmp_path):
    no_config = tmp_path / "no_config"
    no_config.mkdir()
    shutil.copy(TWO_ROOM / "weights.pt", no_config)
    cases = {
        checkpoint_model(tmp_path / "absent"): "checkpoint folder '.*absent' does not exist",
        checkpoint_model(no_config): "no_config' has no config.json",
        checkpoint_model("tests/fixtures/swm/checkpoints/lewm_two_room"): "must be an absolute path",
        checkpoint_model(FIXTURES / "datasets"): "holds no .pt file",
    }
    for override, message in cases.items():
        with pytest.raises(ConfigError, match=message) as error:
            sweep(override)
        assert len(str(error.value).splitlines()) == 1, error.value
    with pytest.raises(ConfigError, match="encodes 32 px frames; the task renders 64 px"):
        sweep(checkpoint_model(TWO_ROOM), "tasks=[{name: two_room, image_size: 64}]")
    with pytest.raises(ConfigError, match="trained on histories of 1 frames; the protocol's history is 3"):
        sweep(checkpoint_model(TWO_ROOM), "protocol.history=3")


def test_their_checkpoint_plans_and_is_scored_under_wmbench_protocol(cache_dir):
    [spec] = [t for t in sweep(checkpoint_model(TWO_ROOM), "conditions=[{}]", "data.episodes=4",
                               "data.heldout_episodes=4", "protocol.episodes=2", "diagnostics=false")]  # fmt: skip
    rows, episodes = run_trial(spec)
    [row] = rows
    assert row.status == "ok" and row.model == "swm_lewm" and row.train_steps == 0
    assert row.episodes == 2 and len(episodes) == 2 and row.plan_ms_median > 0
    assert row.num_params == load(TWO_ROOM, 1).num_params and row.latent_eff_rank > 1
    assert json.loads(row.config)["model"]["overrides"]["checkpoint"] == str(TWO_ROOM)


def test_lance_without_pylance_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lance", None)  # import lance raises ImportError
    with pytest.raises(
        SWMDataError, match=r"^reading a stable-worldmodel Lance dataset needs pylance: .*wmbench\[swm\]"
    ):
        SWMReader(DATASETS["lance"])


@pytest.mark.parametrize("fmt", sorted(DATASETS))
def test_their_dataset_converts_to_what_their_reader_returns(fmt, tmp_path):
    reference = np.load(FIXTURES / "datasets" / "reference.npz")
    episodes = convert(DATASETS[fmt], make_task("two_room", image_size=32), steps=20, out=tmp_path / fmt)
    assert len(episodes) == 3 and episodes.steps == 20  # the 2-step episode is left out
    assert episodes.info["source"]["left_out_shorter"] == 1 and episodes.key.startswith("swm-")
    frames = reference[f"{fmt}_pixels"].transpose(0, 2, 3, 1)  # theirs (T, 3, H, W); the store's (T, H, W, 3)
    np.testing.assert_array_equal(episodes.pixels[0, 0:21], frames[:21])
    np.testing.assert_array_equal(episodes.actions[0], reference[f"{fmt}_action"][:20])
    np.testing.assert_array_equal(episodes.states[0], reference[f"{fmt}_state"][:21])
    again = convert(DATASETS[fmt], make_task("two_room", image_size=32), steps=20, out=tmp_path / fmt)
    assert again.key == episodes.key and open_converted(tmp_path / fmt).key == episodes.key


def test_the_conversion_command_prints_the_folder_a_sweep_names(tmp_path, capsys):
    folder = tmp_path / "converted"
    argv = [str(DATASETS["hdf5"]), "--task", "two_room", "--image-size", "32", "--steps", "20", "--out", str(folder)]
    assert convert_swm.main(argv) == 0
    printed = capsys.readouterr().out
    assert f"sweep       data: {{source: {folder.resolve()}}}" in printed and "3 of 4 (1 shorter" in printed
    assert convert_swm.main([str(DATASETS["hdf5"]), "--task", "two_room", "--out", str(tmp_path / "x")]) == 1
    error = capsys.readouterr().err  # Two-Room renders 64 px by default; their frames are 32 px
    assert error.startswith("error: ") and error.rstrip().endswith("--image-size 32)") and len(error.splitlines()) == 1


def test_a_converted_dataset_for_another_frame_size_is_refused(tmp_path):
    with pytest.raises(SWMDataError, match="frames are 32×32; task two_room renders 64×64"):
        convert(DATASETS["hdf5"], make_task("two_room", image_size=64), out=tmp_path / "x")


@pytest.mark.parametrize("fmt", sorted(DATASETS))
def test_their_dataset_trains_a_wmbench_lewm(fmt, tmp_path):
    episodes = convert(DATASETS[fmt], make_task("two_room", image_size=32), out=tmp_path / fmt)
    windows = WindowDataset(episodes, num_frames=2, frameskip=5)
    torch.manual_seed(0)
    model = build_model("lewm", "tiny", 32, 10, history=1)
    stats = train(
        model, windows, TrainConfig(steps=3, batch_size=8, num_frames=2, lr=1e-3, log_every=3, bf16=False), "cpu", 0
    )
    assert stats.steps == 3 and np.isfinite(stats.final_loss) and stats.diagnostics["eff_rank"] > 1


def test_a_sweep_trains_on_converted_data_and_checks_it_fits_before_ray(cache_dir, tmp_path):
    folder = tmp_path / "converted"
    convert(DATASETS["hdf5"], make_task("two_room", image_size=32), out=folder)
    with pytest.raises(ConfigError, match="was converted for two_room at 32 px; the trial's task is two_room at 64"):
        sweep(f"data.source={folder}", "tasks=[{name: two_room, image_size: 64}]")
    with pytest.raises(ConfigError, match="data.source must be an absolute path"):
        sweep("data.source=relative/folder")
    small = ["conditions=[{}]", "train.steps=3", "train.num_frames=2", "data.heldout_episodes=4", "protocol.episodes=2"]
    [spec] = sweep(f"data.source={folder}", "models=[{name: lewm}]", "diagnostics=false", *small)
    [row], _ = run_trial(spec)
    assert row.status == "ok" and row.train_steps == 3
    assert json.loads(row.config)["data"]["source"] == str(folder)


def test_an_unset_data_source_leaves_trial_ids_as_they_were(monkeypatch):
    """Ids written before data.source existed still name the same trials (resume finds their rows)."""
    [spec] = sweep("models=[{name: lewm}]", "conditions=[{}]")
    current = spec.trial_id
    to_dict = TrialSpec.to_dict

    def before_the_field(self: TrialSpec) -> dict:
        tree = to_dict(self)
        del tree["data"]["source"]
        return tree

    monkeypatch.setattr(TrialSpec, "to_dict", before_the_field)
    assert spec.trial_id == current
