"""A standing leaderboard: several results folders on one board, merged only where they ran the same cases.

The first folder founds the board; each later folder's rows join it, one (protocol, task) at a
time, when their protocol hash is one the board already has and their case fingerprint (a hash
of the evaluation cases each condition row records, harness/eval/cases.py) is one the board
already holds for that task and protocol. Rows that cannot join are left off the board and
named in a :class:`Refusal` (which folder, which task, and what differs: a protocol field, or
the cases). Rows written before rows carried a case fingerprint have unknown cases: they rank
only within their own folder. A task no earlier folder ran joins as it is.

Every row keeps the folder it came from in a ``source`` column (a short label, "" when the board
reads one folder), and the leaderboard keys its entries by it, so the same model from two sweeps
is two entries ranked side by side, never pooled as seeds.
"""

from __future__ import annotations

import glob
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

UNKNOWN_CASES = ""  # the case fingerprint of rows written before rows recorded one
CASE_SETTINGS = ("task", "task_version", "data")  # the trial spec's parts besides the protocol that decide its cases
NOT_CASE_SETTINGS = ("data.workers",)  # how data were collected, not which


class NoFoldersError(FileNotFoundError):
    """A folder pattern matched nothing."""


@dataclass(frozen=True)
class Source:
    """One results folder on the board."""

    label: str  # what the board calls it: the folder's name ("" when the board reads one folder)
    folder: str  # as given
    sweeps: tuple[str, ...]  # the sweep names its rows carry
    trials: int
    started: pd.Timestamp | None  # when its first trial started
    case_fingerprints: tuple[str, ...]  # the case sets its rows ran on ("" for rows that recorded none)

    def describe(self) -> str:
        when = f", from {self.started:%Y-%m-%d %H:%M} UTC" if self.started is not None else ""
        known = [fingerprint for fingerprint in self.case_fingerprints if fingerprint != UNKNOWN_CASES]
        cases = "cases " + ", ".join(known) if known else ""
        if UNKNOWN_CASES in self.case_fingerprints:
            cases += ("; " if cases else "") + "some rows with unknown cases (written before case fingerprints)"
        sweep = ", ".join(self.sweeps) or "?"
        return f"`{self.label}` = `{self.folder}` (sweep {sweep}, {self.trials} trial(s){when}; {cases or 'no cases'})"


@dataclass(frozen=True)
class Refusal:
    """Rows of one folder, task and protocol that were left off the board, and why."""

    source: Source
    task: str
    protocol_hash: str
    reason: str

    def describe(self) -> str:
        sweep = ", ".join(self.source.sweeps) or "?"
        return (
            f"not merged: {self.source.folder} (sweep {sweep}) {self.task} under protocol {self.protocol_hash}: "
            f"{self.reason}; its rows are left off this board"
        )


def expand(patterns: Sequence[str | Path]) -> list[str]:
    """Folders from folder names and glob patterns, in the order given (each glob's matches sorted), once each.

    A URI (``s3://...``) is taken as it is. A pattern that matches nothing raises :class:`NoFoldersError`.
    """
    folders: list[str] = []
    seen: set[str] = set()
    for pattern in map(str, patterns):
        if "://" in pattern or not glob.has_magic(pattern):
            matches = [pattern]
        elif not (matches := sorted(glob.glob(pattern))):
            raise NoFoldersError(f"no results folder matches {pattern}")
        for folder in matches:
            resolved = folder if "://" in folder else str(Path(folder).resolve())
            if resolved not in seen:
                seen.add(resolved)
                folders.append(folder)
    return folders


def folder_labels(folders: Sequence[str]) -> list[str]:
    """What the board calls each folder: its name, or the path as given where two folders share a name."""
    if len(folders) == 1:
        return [""]
    names = [folder.rstrip("/").rsplit("/", 1)[-1] for folder in folders]
    return [name if names.count(name) == 1 else folder for name, folder in zip(names, folders, strict=True)]


def source_of(label: str, folder: str, conditions: pd.DataFrame) -> Source:
    """A folder's description, from its condition rows."""
    started = pd.to_datetime(conditions["started_at"], utc=True).min() if len(conditions) else None
    fingerprints = conditions.loc[conditions["status"] != "failed", "case_fingerprint"]
    return Source(
        label=label,
        folder=folder,
        sweeps=tuple(sorted(conditions["sweep"].dropna().unique())),
        trials=int(conditions["trial_id"].nunique()),
        started=None if pd.isna(started) else started,
        case_fingerprints=tuple(sorted(fingerprints.unique())),
    )


def merge(
    read: Sequence[tuple[Source, pd.DataFrame, pd.DataFrame]],
) -> tuple[pd.DataFrame, pd.DataFrame, list[Refusal]]:
    """(condition rows, episode rows, refusals) of the board: the first folder whole, then each later folder's
    rows per (protocol, task) where they agree with the board so far. Rows carry their folder in ``source``."""
    conditions: list[pd.DataFrame] = []
    episodes: list[pd.DataFrame] = []
    refused: list[Refusal] = []
    board = pd.DataFrame()
    for index, (source, rows, stored) in enumerate(read):
        rows, stored = rows.assign(source=source.label), stored.assign(source=source.label)
        if index == 0:
            kept = rows
        else:
            keep = []
            for (protocol_hash, task), group in rows.groupby(["protocol_hash", "task"], sort=True):
                reason = _why_not_merged(board, group, protocol_hash, task)
                if reason is None:
                    keep.append(group)
                else:
                    refused.append(Refusal(source, task, protocol_hash, reason))
            kept = pd.concat(keep) if keep else rows.iloc[:0]
        conditions.append(kept)
        episodes.append(stored[stored["trial_id"].isin(set(kept["trial_id"]))])
        board = pd.concat([board, kept], ignore_index=True) if len(board) else kept
    return pd.concat(conditions, ignore_index=True), pd.concat(episodes, ignore_index=True), refused


def within_folder_warnings(conditions: pd.DataFrame) -> list[str]:
    """One line per folder, task and protocol whose rows ran on several known case sets (ranked as one sweep)."""
    ok = conditions[(conditions["status"] != "failed") & (conditions["case_fingerprint"] != UNKNOWN_CASES)]
    warnings = []
    for (source, protocol_hash, task), rows in ok.groupby(["source", "protocol_hash", "task"], sort=True):
        fingerprints = sorted(rows["case_fingerprint"].unique())
        if len(fingerprints) > 1:
            where = f" of `{source}`" if source else ""
            warnings.append(
                f"the {task} rows{where} under protocol {protocol_hash} ran on {len(fingerprints)} different case "
                f"sets ({', '.join(fingerprints)}), e.g. data settings that differ between variants; they are "
                "ranked together as one sweep, but their differences are not paired on the same cases"
            )
    return warnings


# --------------------------------------------------------------------------- why rows cannot join


def _why_not_merged(board: pd.DataFrame, group: pd.DataFrame, protocol_hash: str, task: str) -> str | None:
    """None when ``group`` (one folder's rows of one protocol and task) may join ``board``, else the reason."""
    if protocol_hash not in set(board["protocol_hash"]):
        return _protocol_reason(board, group, task)
    fingerprints = set(group.loc[group["status"] != "failed", "case_fingerprint"])
    if not fingerprints:
        return None  # failed trials only: they ran no cases, and are listed with their errors
    if UNKNOWN_CASES in fingerprints:
        return (
            "its rows carry no case fingerprint (written before rows recorded one), so its cases are unknown; "
            "rows of unknown cases are ranked only within their own folder: re-run it to join"
        )
    same = board[(board["protocol_hash"] == protocol_hash) & (board["task"] == task) & (board["status"] != "failed")]
    on_board = set(same["case_fingerprint"])
    if not on_board:
        return None  # a task the board has not seen under this protocol: nothing to disagree with
    if UNKNOWN_CASES in on_board:
        first = same.loc[same["case_fingerprint"] == UNKNOWN_CASES, "source"].iloc[0]
        return (
            f"the board's {task} rows from {first or 'the first folder'} carry no case fingerprint (written before "
            "rows recorded one), so their cases are unknown and nothing is ranked with them"
        )
    if fingerprints <= on_board:
        return None
    theirs, ours = ", ".join(sorted(fingerprints - on_board)), ", ".join(sorted(on_board))
    settings = _setting_differences(group, same) or "same task and data settings: the task's code or case draw changed"
    return f"its evaluation cases differ (case fingerprint {theirs} vs the board's {ours}; {settings})"


def _protocol_reason(board: pd.DataFrame, group: pd.DataFrame, task: str) -> str:
    """Which protocol fields differ from the nearest protocol on the board (among the same task's, if any)."""
    theirs = _protocol(group["protocol"])
    same_task = board[board["task"] == task]
    candidates = (same_task if len(same_task) else board).drop_duplicates("protocol_hash")
    nearest_hash, nearest = min(
        ((row.protocol_hash, _protocol(pd.Series([row.protocol]))) for row in candidates.itertuples()),
        key=lambda candidate: len(_differences(theirs, candidate[1])),
    )
    differing = _differences(theirs, nearest)
    fields = ", ".join(f"{key} {_show(theirs.get(key))} vs {_show(nearest.get(key))}" for key in differing)
    return f"its protocol differs from the board's {nearest_hash} in protocol field(s) {fields or '(none recorded)'}"


def _protocol(texts: pd.Series) -> dict[str, Any]:
    """The first of a column of protocol JSON texts as a dict, without its name (which the hash leaves out)."""
    texts = texts.dropna()
    try:
        protocol = json.loads(texts.iloc[0]) if len(texts) else {}
    except json.JSONDecodeError:
        return {}
    return {key: value for key, value in protocol.items() if key != "name"} if isinstance(protocol, dict) else {}


def _setting_differences(group: pd.DataFrame, board: pd.DataFrame) -> str:
    """The task and data settings in which the first trial of ``group`` differs from the board's, e.g. ``data.seed 1
    vs 0``; "" when they agree or a config cannot be read."""
    theirs, ours = _case_settings(group), _case_settings(board)
    if theirs is None or ours is None:
        return ""
    return ", ".join(f"{key} {_show(theirs.get(key))} vs {_show(ours.get(key))}" for key in _differences(theirs, ours))


def _case_settings(rows: pd.DataFrame) -> dict[str, Any] | None:
    configs = rows.loc[rows["status"] != "failed", "config"].dropna()
    try:
        config = json.loads(configs.iloc[0]) if len(configs) else None
    except json.JSONDecodeError:
        return None
    if not isinstance(config, dict):
        return None
    flat = _flatten({key: config[key] for key in CASE_SETTINGS if key in config})
    return {key: value for key, value in flat.items() if key not in NOT_CASE_SETTINGS}


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _differences(theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    keys = sorted(set(theirs) | set(ours))
    return [
        key for key in keys if json.dumps(theirs.get(key), sort_keys=True) != json.dumps(ours.get(key), sort_keys=True)
    ]


def _show(value: Any) -> str:
    return "(none)" if value is None else json.dumps(value) if isinstance(value, list | dict) else str(value)
