"""Probe quantities: the tasks name the state dims their probe figures are reported for, and rows carry them.

Every task's quantities are checked against its state in tests/test_task_contract.py; the probe
itself in tests/test_train.py.
"""

from __future__ import annotations

from harness.report.results import ConditionRow, load, write_trial
from tasks.base import task_class


def test_pusht_names_agent_block_and_angle_as_the_paper_probes_them():
    """LeWM reports Pearson r for Push-T's agent, block and block angle (REFERENCE.md, "Probes")."""
    assert task_class("pusht").quantities == {"agent": (0, 1), "block": (2, 3), "block_angle": (4,)}
    assert task_class("two_room").quantities == {"agent": (0, 1)}


def test_rows_round_trip_the_per_quantity_probe_columns(tmp_path):
    row = ConditionRow(
        sweep="s", trial_id="t", status="ok", task="pusht", model="lewm", role="model", variant="", seed=0,
        config="{}", protocol="{}", protocol_hash="h", probe_r2=0.8,
        probe_quantities=["agent", "block", "block_angle"],
        probe_r2_by_quantity=[0.9, 0.8, 0.7],
        probe_pearson_r=[0.97, 0.95, 0.9],
    )  # fmt: skip
    write_trial(str(tmp_path), "t", [row], [])
    loaded = load(str(tmp_path)).iloc[0]
    assert list(loaded["probe_quantities"]) == ["agent", "block", "block_angle"]
    assert list(loaded["probe_r2_by_quantity"]) == [0.9, 0.8, 0.7]
    assert list(loaded["probe_pearson_r"]) == [0.97, 0.95, 0.9]
