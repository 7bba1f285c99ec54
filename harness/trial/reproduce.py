"""Re-run one result row from its own fields and say whether the figure reproduces.

Every condition row carries its whole trial config (JSON); this rebuilds that trial
for that one condition (the dataset and checkpoint caches make it cheap when they
are still there) and compares the new success rate with the row's 95% interval.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pyarrow.parquet as pq

from harness.sweep.config import ConfigError
from harness.trial.trial import run_trial
from tasks.conditions import Condition


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
        raise ConfigError(f"cannot read results file {path!r}: {error}") from None
    if not 0 <= row < len(table):
        raise ConfigError(f"{path} has rows 0..{len(table) - 1}; row {row} does not exist")
    record = table.iloc[row]
    if record["status"] != "ok":
        raise ConfigError(f"row {row} of {path} is a failed trial; there is no figure to reproduce")
    config = json.loads(record["config"])
    specs = [spec for spec in config["conditions"] if Condition(**spec).name == record["condition"]]
    config["conditions"] = specs[:1]
    config["device"] = "cpu" if record["device"].startswith("cpu") else config.get("device", "cpu")
    rows, _ = run_trial(config)
    return Reproduction(
        trial_id=record["trial_id"],
        condition=record["condition"],
        recorded=float(record["success_rate"]),
        interval=(float(record["success_ci_low"]), float(record["success_ci_high"])),
        reproduced=float(rows[0]["success_rate"]),
    )
