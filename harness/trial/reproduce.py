"""Re-run one result row from its own fields and say whether the figure reproduces.

Every condition row carries its whole trial spec (JSON); this rebuilds that trial
for that one condition (the dataset and checkpoint caches make it cheap when they
are still there) and compares the new success rate with the row's 95% interval.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow.parquet as pq
import torch

from harness.trial.spec import TrialSpec
from harness.trial.trial import run_trial


class RowError(ValueError):
    """The results file or row cannot be re-run (user-fixable: another file or row)."""


@dataclass
class Reproduction:
    trial_id: str
    condition: str
    recorded: float
    interval: tuple[float, float]
    reproduced: float

    @property
    def within_interval(self) -> bool:
        low, high = self.interval
        return low <= self.reproduced <= high

    def describe(self) -> str:
        verdict = "reproduces" if self.within_interval else "does NOT reproduce"
        low, high = self.interval
        return (
            f"{self.trial_id} [{self.condition}]: recorded success {self.recorded:.3f} "
            f"[{low:.3f}, {high:.3f}], re-run {self.reproduced:.3f}: {verdict}"
        )


def reproduce_row(path: str, row: int) -> Reproduction:
    """Re-run row ``row`` (0-based) of the condition-rows Parquet file ``path``."""
    try:
        table = pq.read_table(path).to_pandas()
    except (OSError, ValueError) as error:
        raise RowError(f"cannot read results file {path!r}: {error}") from None
    if not 0 <= row < len(table):
        raise RowError(f"{path} has rows 0..{len(table) - 1}; row {row} does not exist")
    record = table.iloc[row]
    if record["status"] != "ok":
        raise RowError(f"row {row} of {path} is a failed trial; there is no figure to reproduce")
    spec = TrialSpec.from_dict(json.loads(record["config"]))
    (condition,) = [c for c in spec.conditions if c.name == record["condition"]]
    device = "cuda" if record["device"].startswith("cuda") and torch.cuda.is_available() else "cpu"
    rows, _ = run_trial(spec.with_condition(condition), device)
    return Reproduction(
        trial_id=record["trial_id"],
        condition=record["condition"],
        recorded=float(record["success_rate"]),
        interval=(float(record["success_ci_low"]), float(record["success_ci_high"])),
        reproduced=float(rows[0].success_rate),
    )
