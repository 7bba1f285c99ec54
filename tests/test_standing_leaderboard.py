"""A standing leaderboard: sweeps run at different times join one board when their protocol and cases agree,
and a sweep on other cases is refused with the reason (real tiny sweeps through the CLI)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from harness.eval.cases import case_fingerprint, make_cases
from harness.report import leaderboard, results


def test_the_case_fingerprint_changes_with_any_case_and_with_the_source_dataset(two_room_cases):
    task, data, protocol, cases = two_room_cases
    fingerprint = case_fingerprint(task, data.key, cases)
    assert re.fullmatch(r"[0-9a-f]{16}", fingerprint)
    assert case_fingerprint(task, data.key, make_cases(task, data, protocol)[0]) == fingerprint  # drawn again: same
    moved_goal = [*cases[:-1], dataclasses.replace(cases[-1], goal=cases[-1].goal + 1.0)]
    assert case_fingerprint(task, data.key, moved_goal) != fingerprint
    assert case_fingerprint(task, data.key, cases[:-1]) != fingerprint
    assert case_fingerprint(task, "another-dataset", cases) != fingerprint


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory, tiny_sweep) -> Path:
    """Three sweeps of the tiny sweep, one after the other, each into its own folder (reference controllers only:
    seconds each). The first founds the board; the second runs the same random trial again and adds the oracle;
    the third collects its data with another seed, so its held-out episodes, and its cases, differ."""
    root = tmp_path_factory.mktemp("standing")
    runs = {
        "board": ["models=[{name: random}]"],
        "submission_b": ["models=[{name: random}, {name: oracle}]"],
        "submission_c": ["models=[{name: random}]", "data.seed=1"],
    }
    for name, overrides in runs.items():
        result = tiny_sweep(f"results_dir={root / name}", *overrides)
        assert result.returncode == 0, result.stderr[-3000:]
    return root


def test_every_condition_row_records_the_fingerprint_of_its_cases(sweeps: Path) -> None:
    names = ("board", "submission_b", "submission_c")
    fingerprints = {name: set(results.load(str(sweeps / name))["case_fingerprint"]) for name in names}
    (board,) = fingerprints["board"]
    assert re.fullmatch(r"[0-9a-f]{16}", board)
    assert fingerprints["submission_b"] == {board}  # other models, the same data and protocol: the same cases
    assert fingerprints["submission_c"] != {board} and len(fingerprints["submission_c"]) == 1


def test_sweeps_on_the_same_cases_share_one_board_and_one_on_other_cases_is_refused(sweeps: Path, harness_cli) -> None:
    out = sweeps / "merged"
    merged = harness_cli("leaderboard", sweeps / "board", sweeps / "submission_*", "--out", out, timeout=120)
    assert merged.returncode == 0, merged.stderr[-3000:]
    markdown = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert merged.stdout.strip() == markdown.strip()
    # One table, each row marked with its sweep; the same random trial from two sweeps is two entries, not two seeds.
    assert "| task | model | sweep | condition |" in markdown
    for entry in ("random (floor) | board", "random (floor) | submission_b", "oracle (ceiling) | submission_b"):
        assert f"| two_room | {entry} | clean |" in markdown, entry
    assert len(re.findall(r"^### Protocol ", markdown, flags=re.MULTILINE)) == 1
    # The third sweep ran other cases: named with the reason on stderr and on the page, and none of its rows ranked.
    (refusal,) = [line for line in merged.stderr.splitlines() if line.startswith("not merged:")]
    assert str(sweeps / "submission_c") in refusal and "(sweep tiny) two_room" in refusal
    assert "its evaluation cases differ" in refusal and "data.seed 1 vs 0" in refusal
    assert refusal in markdown and "| submission_c |" not in markdown
    board = leaderboard.build([sweeps / "board", sweeps / "submission_b", sweeps / "submission_c"])
    clean = board.conditions[board.conditions["condition"] == "clean"]
    assert sorted(zip(clean["source"], clean["model"], strict=True)) == [
        ("board", "random"), ("submission_b", "oracle"), ("submission_b", "random"),
    ]  # fmt: skip
    assert (clean["seeds"] == 1).all()
    assert [(r.source.label, r.task) for r in board.refused] == [("submission_c", "two_room")]


def test_several_folders_need_an_output_folder_and_a_glob_must_match(sweeps: Path, harness_cli) -> None:
    unnamed = harness_cli("leaderboard", sweeps / "board", sweeps / "submission_b", timeout=120)
    assert unnamed.returncode == 2 and "--out" in unnamed.stderr and len(unnamed.stderr.strip().splitlines()) == 1
    nothing = harness_cli("leaderboard", sweeps / "nothing_*", "--out", sweeps / "x", timeout=120)
    assert nothing.returncode == 2 and "nothing_*" in nothing.stderr and "Traceback" not in nothing.stderr
