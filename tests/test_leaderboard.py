"""The leaderboard reads real Parquet rows (written by harness.report.results) and never ranks across protocols."""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.eval.protocol import PRESETS, Protocol
from harness.report import leaderboard, stats
from harness.report.results import write_trial

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
TASKS = ("two_room", "pusht")
SKILL = {"oracle": 1.0, "lewm": 0.8, "dino_wm": 0.65, "random": 0.25}  # clean success each controller aims at
PLAN_MS = {"oracle": 0.0, "lewm": 90.0, "dino_wm": 2400.0, "random": 0.0}
TOKENS = {"lewm": 1, "dino_wm": 256}


def case_difficulty(case_seeds: np.ndarray) -> np.ndarray:
    """A fixed difficulty in [0, 1) per evaluation case: the same case is equally hard for every run."""
    return np.array([np.random.default_rng(int(seed)).random() for seed in case_seeds])


def write_synthetic_trial(
    root: Path,
    *,
    task: str,
    model: str,
    seed: int,
    skill: float,
    protocol: Protocol = PRESETS["wmbench"],
    episodes: int = 30,
    noise_levels: tuple[float, ...] = (0.1, 0.2),
    shifts: tuple[float, ...] = (2.0, 4.0),
    degradation: float = 1.5,
    surprise_auroc: float | None = None,
    variant: str = "",
) -> str:
    """One trial's condition and episode rows, as harness.sweep.cli writes them: every condition on the same cases.

    A case succeeds when its difficulty is below the condition's success level (skill shrunk by the
    perturbation magnitude), so the conditions of a trial are paired case for case.
    """
    rng = np.random.default_rng(1000 * seed + len(model) + 7 * len(task))
    trial_id = f"{task}-{model}-{protocol.hash()}-s{seed}{variant}"
    case_seeds = np.arange(episodes) + 10_000 * seed  # (episodes,) shared by all conditions of the trial
    difficulty = case_difficulty(case_seeds)
    conditions = [("clean", 0.0, 0.0)]
    conditions += [(f"action_noise={s}", s, 0.0) for s in noise_levels]
    conditions += [(f"camera_shift={s:g}", 0.0, s) for s in shifts]
    condition_rows, episode_rows = [], []
    for name, noise, shift in conditions:
        level = skill * (1 - degradation * noise) * (1 - 0.05 * shift) + rng.normal(0, 0.03)
        success = difficulty < level
        plan_ms = np.full(episodes, PLAN_MS[model]) * rng.uniform(0.9, 1.1, episodes)
        distance = np.where(success, 2.0, 20.0) + rng.uniform(0, 1, episodes)
        for i, case_seed in enumerate(case_seeds):
            episode_rows.append(
                {
                    "trial_id": trial_id,
                    "task": task,
                    "model": model,
                    "seed": seed,
                    "condition": name,
                    "episode": i,
                    "case_seed": int(case_seed),
                    "start": [0.0, 0.0],
                    "goal": [1.0, 1.0],
                    "success": bool(success[i]),
                    "final_distance": float(distance[i]),
                    "steps": 50,
                    "plan_ms": float(plan_ms[i]),
                    "start_solved": False,
                    "protocol_hash": protocol.hash(),
                }
            )
        wilson = stats.wilson_interval(int(success.sum()), episodes)
        condition_rows.append(
            {
                "sweep": "synthetic",
                "trial_id": trial_id,
                "status": "ok",
                "task": task,
                "model": model,
                "variant": variant,
                "seed": seed,
                "config": "{}",
                "condition": name,
                "action_noise": noise,
                "camera_shift": shift,
                "episodes": episodes,
                "success_rate": float(success.mean()),
                "success_ci_low": wilson.low,
                "success_ci_high": wilson.high,
                "final_distance": float(distance.mean()),
                "plan_ms_median": float(np.median(plan_ms)),
                "plan_ms_p95": float(np.percentile(plan_ms, 95)),
                "tokens_per_frame": TOKENS.get(model),
                "surprise_auroc": surprise_auroc if name == "clean" else None,
                "protocol": protocol.to_json(),
                "protocol_hash": protocol.hash(),
            }
        )
    write_trial(str(root), trial_id, condition_rows, episode_rows)
    return trial_id


def write_failed_trial(root: Path, *, task: str, model: str, seed: int, error: str, protocol: Protocol) -> str:
    """A trial that raised: one row with status "failed" and its error, as the sweep records it."""
    trial_id = f"{task}-{model}-{protocol.hash()}-s{seed}-failed"
    row = {
        "sweep": "synthetic",
        "trial_id": trial_id,
        "status": "failed",
        "error": error,
        "task": task,
        "model": model,
        "seed": seed,
        "protocol": protocol.to_json(),
        "protocol_hash": protocol.hash(),
    }
    write_trial(str(root), trial_id, [row], [])
    return trial_id


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tasks × (oracle, lewm, dino_wm, random) × 2 seeds on the default protocol, one failed trial."""
    root = tmp_path_factory.mktemp("results") / "robustness"
    for task in TASKS:
        for model, skill in SKILL.items():
            for seed in (0, 1):
                auroc = {"lewm": 0.9, "dino_wm": 0.7}.get(model)
                write_synthetic_trial(root, task=task, model=model, seed=seed, skill=skill, surprise_auroc=auroc)
    write_failed_trial(
        root,
        task="pusht",
        model="dreamer",
        seed=0,
        error="Traceback (most recent call last):\n  ...\nFloatingPointError: loss became NaN at step 120",
        protocol=PRESETS["wmbench"],
    )
    return root


@pytest.fixture(scope="module")
def board(sweep: Path) -> leaderboard.Leaderboard:
    return leaderboard.build(sweep)


@pytest.fixture(scope="module")
def rendered(sweep: Path) -> dict[str, Path]:
    return leaderboard.render(sweep)


def _protocol_sections(markdown: str) -> dict[str, str]:
    """Protocol hash -> the Markdown between its heading and the next protocol heading."""
    parts = re.split(r"^### Protocol `([0-9a-z]+)`.*$", markdown, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_rows_group_by_protocol_task_model_condition(board: leaderboard.Leaderboard) -> None:
    table = board.conditions
    ok = table[table["seeds"] > 0]
    assert len(ok) == len(TASKS) * len(SKILL) * 5  # clean + 2 noise levels + 2 shifts
    assert not ok.duplicated(leaderboard.GROUP).any()
    assert (ok["seeds"] == 2).all() and (ok["episodes"] == 60).all()
    lewm_clean = ok[(ok["task"] == "two_room") & (ok["model"] == "lewm") & (ok["condition"] == "clean")].iloc[0]
    assert lewm_clean["success_ci_low"] <= lewm_clean["success"] <= lewm_clean["success_ci_high"]
    assert lewm_clean["tokens_per_frame"] == 1
    assert 80 < lewm_clean["plan_ms_median"] < 100


def test_two_protocols_never_share_a_table(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    v1 = PRESETS["lewm_v1"]
    write_synthetic_trial(root, task="two_room", model="lewm", seed=0, skill=0.85)
    write_synthetic_trial(root, task="two_room", model="random", seed=0, skill=0.25)
    write_synthetic_trial(root, task="two_room", model="dino_wm", seed=0, skill=0.3, protocol=v1)
    paths = leaderboard.render(root)
    markdown = paths["markdown"].read_text()

    sections = _protocol_sections(markdown)
    assert set(sections) == {PRESETS["wmbench"].hash(), v1.hash()}
    default_table, v1_table = sections[PRESETS["wmbench"].hash()], sections[v1.hash()]
    assert "| lewm |" in default_table and "random (floor)" in default_table and "dino_wm" not in default_table
    assert "| dino_wm |" in v1_table and "lewm" not in v1_table and "random" not in v1_table
    note = next(line for line in markdown.splitlines() if line.startswith("Note:"))
    assert "never ranked together" in note and "wmbench" in note and "lewm_v1" in note
    assert re.search(r"goal_offset \((25 vs 100|100 vs 25)\)", note) and re.search(
        r"budget \((50 vs 150|150 vs 50)\)", note
    )
    html = paths["html"].read_text()
    assert html.count("<h2>Protocol") == 2 and "never ranked together" in html


def test_variants_of_one_model_are_entries_apart_never_pooled_as_seeds(tmp_path: Path) -> None:
    root = tmp_path / "grid"
    for variant, skill in (("planner.name=cem", 0.8), ("planner.name=mppi", 0.4)):
        for seed in (0, 1):
            write_synthetic_trial(root, task="two_room", model="lewm", seed=seed, skill=skill, variant=variant)
        write_synthetic_trial(root, task="two_room", model="random", seed=0, skill=0.05, variant=variant)
    table = leaderboard.build(root).conditions
    clean = table[table["condition"] == "clean"].set_index("model")
    assert set(clean.index) == {f"{m} · planner.name={p}" for m in ("lewm", "random") for p in ("cem", "mppi")}
    assert (clean.loc[["lewm · planner.name=cem", "lewm · planner.name=mppi"], "seeds"] == 2).all()
    assert clean.loc["lewm · planner.name=cem", "success"] > clean.loc["lewm · planner.name=mppi", "success"]
    markdown = leaderboard.render(root)["markdown"].read_text()
    assert "| random (floor) · planner.name=mppi |" in markdown


def test_paired_difference_and_mcnemar_use_matched_cases(tmp_path: Path) -> None:
    """Perturbed successes are a subset of clean ones here, so every discordant pair favours clean."""
    root = tmp_path / "paired"
    write_synthetic_trial(root, task="two_room", model="lewm", seed=0, skill=0.8, episodes=40, shifts=())
    table = leaderboard.summarize(root)
    episodes = pd.read_parquet(next((root / "episodes").glob("*.parquet")))
    clean = episodes[episodes["condition"] == "clean"].set_index("case_seed")["success"]
    noisy = episodes[episodes["condition"] == "action_noise=0.2"].set_index("case_seed")["success"]
    clean_only, noisy_only = int((clean & ~noisy).sum()), int((~clean & noisy).sum())

    row = table[table["condition"] == "action_noise=0.2"].iloc[0]
    assert row["delta_vs_clean"] == pytest.approx(noisy.mean() - clean.mean())
    assert (row["clean_only"], row["perturbed_only"]) == (clean_only, noisy_only)
    assert row["mcnemar_p"] == pytest.approx(stats.mcnemar_exact(clean_only, noisy_only))
    assert row["delta_ci_high"] < 0 < clean_only  # the drop is real: the paired CI excludes zero
    assert pd.isna(table[table["condition"] == "clean"].iloc[0]["delta_vs_clean"])


def test_robustness_is_the_normalised_area_under_success_vs_magnitude(board: leaderboard.Leaderboard) -> None:
    rows = board.conditions[(board.conditions["task"] == "pusht") & (board.conditions["model"] == "lewm")]
    noise = rows[rows["camera_shift"] == 0].sort_values("action_noise")
    expected = np.trapezoid(noise["success"], noise["action_noise"]) / 0.2
    assert rows["robustness_action_noise"].iloc[0] == pytest.approx(expected)
    oracle = board.conditions[board.conditions["model"] == "oracle"]
    random = board.conditions[board.conditions["model"] == "random"]
    assert (oracle["robustness_camera_shift"].to_numpy() > random["robustness_camera_shift"].to_numpy()).all()


def test_controllers_are_the_floor_and_ceiling_rows(board: leaderboard.Leaderboard) -> None:
    clean = board.conditions[board.conditions["condition"] == "clean"]
    for task in TASKS:
        order = list(clean[clean["task"] == task]["model"])
        assert order == ["oracle", "lewm", "dino_wm", "random"]
    markdown = leaderboard.to_markdown(board)
    assert "| oracle (ceiling) |" in markdown and "| random (floor) |" in markdown


def test_failed_trials_are_counted_and_listed_with_their_error(board: leaderboard.Leaderboard) -> None:
    assert list(board.failed["model"]) == ["dreamer"]
    row = board.conditions[board.conditions["model"] == "dreamer"].iloc[0]
    assert row["condition"] == "(all trials failed)" and row["failed_trials"] == 1
    markdown = leaderboard.to_markdown(board)
    assert "**1 failed trial(s)**" in markdown
    assert "FloatingPointError: loss became NaN at step 120" in markdown
    assert "✗ 1 failed" in markdown


def test_iqm_and_probability_of_improvement_per_model(board: leaderboard.Leaderboard) -> None:
    models = board.models.set_index("model")
    assert list(board.models["model"])[:2] == ["oracle", "lewm"]
    assert models.loc["lewm", "iqm_ci_low"] <= models.loc["lewm", "iqm"] <= models.loc["lewm", "iqm_ci_high"]
    assert models.loc["lewm", "tasks"] == "pusht, two_room"
    pairs = board.improvement
    lewm_vs_random = pairs[(pairs["model_x"] == "lewm") & (pairs["model_y"] == "random")]
    assert len(lewm_vs_random) == len(TASKS) and (lewm_vs_random["p_x_better"] == 1.0).all()


def test_wide_interval_is_warned_in_table_and_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "small"
    write_synthetic_trial(root, task="two_room", model="lewm", seed=0, skill=0.6, episodes=12, shifts=())
    assert leaderboard.main([str(root)]) == 0
    out, err = capsys.readouterr()
    assert "⚠ CI ±" in out
    assert "exceed ±10 pp" in err and "two_room/lewm/clean" in err


def test_cli_prints_markdown_and_writes_files(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root, out_dir = tmp_path / "quick", tmp_path / "board"
    write_synthetic_trial(root, task="two_room", model="lewm", seed=0, skill=0.8, episodes=20)
    assert leaderboard.main([str(root), "--out", str(out_dir)]) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == (out_dir / "leaderboard.md").read_text().strip()
    assert "| task | model | condition | success % [95% CI] |" in printed
    assert {p.name for p in out_dir.glob("*.png")} >= {f"robustness-{PRESETS['wmbench'].hash()}.png"}


@pytest.mark.parametrize("layout", ["missing", "empty"])
def test_missing_or_empty_results_exit_nonzero_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture, layout: str
) -> None:
    root = tmp_path / "nothing-here"
    if layout == "empty":
        (root / "trials").mkdir(parents=True)
    assert leaderboard.main([str(root)]) != 0
    err = capsys.readouterr().err
    assert str(root) in err and len(err.strip().splitlines()) == 1


def test_baseline_comparison_marks_a_regression_only_where_success_drops(tmp_path: Path) -> None:
    before, now = tmp_path / "before", tmp_path / "now"
    for root, lewm_skill in ((before, 0.9), (now, 0.4)):
        write_synthetic_trial(root, task="two_room", model="lewm", seed=0, skill=lewm_skill, episodes=40)
        write_synthetic_trial(root, task="two_room", model="dino_wm", seed=0, skill=0.6, episodes=40)
    board = leaderboard.build(now, baseline=before)
    clean = board.conditions[board.conditions["condition"] == "clean"].set_index("model")
    assert bool(clean.loc["lewm", "regression"]) and clean.loc["lewm", "vs_baseline_high"] < 0
    assert bool(clean.loc["lewm", "vs_baseline_paired"])  # same seeds and cases: paired
    assert not clean.loc["dino_wm", "regression"] and clean.loc["dino_wm", "vs_baseline"] == 0
    markdown = leaderboard.to_markdown(board)
    assert "vs baseline, pp [95% CI]" in markdown and markdown.count("▼ regression vs baseline") >= 1
    dino_lines = [line for line in markdown.splitlines() if line.startswith("| two_room | dino_wm |")]
    assert dino_lines and not any("regression" in line for line in dino_lines)


def test_results_without_episode_rows_fall_back_to_condition_counts(tmp_path: Path) -> None:
    root = tmp_path / "no-episodes"
    write_synthetic_trial(root, task="two_room", model="lewm", seed=0, skill=0.7, episodes=20, shifts=())
    shutil.rmtree(root / "episodes")
    row = leaderboard.summarize(root).set_index("condition").loc["clean"]
    rate = pd.read_parquet(next((root / "trials").glob("*.parquet"))).set_index("condition").loc["clean"]
    assert row["success"] == pytest.approx(rate["success_rate"])
    assert pd.isna(row["delta_vs_clean"])  # no case seeds: no pairing claimed


def test_html_renders_in_headless_chromium(rendered: dict[str, Path], board: leaderboard.Leaderboard) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent; install it with: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright  # dev dependency: pip install playwright (no browser download)

    problems: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ]
    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), headless=True, args=args, viewport={"width": 1400, "height": 900}
        )
        page = browser.new_page()
        page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto(rendered["html"].resolve().as_uri())
        main_table = page.locator("table.sortable").first
        rows = main_table.locator("tbody tr")
        assert rows.count() == len(board.conditions)
        images = page.locator("img")
        assert images.count() == 3  # robustness, Pareto, surprise
        assert all(images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0") for i in range(3))
        page.screenshot(path=str(ARTIFACTS / "leaderboard.png"), full_page=True)
        header = main_table.locator("th", has_text="success %")
        header.click()  # ascending: the random floor first, the all-failed row (no success) last
        assert rows.first.locator("td").nth(1).inner_text() == "random (floor)"
        assert rows.last.locator("td").nth(1).inner_text() == "dreamer"
        header.click()  # descending: the oracle ceiling first
        assert rows.first.locator("td").nth(1).inner_text() == "oracle (ceiling)"
        assert page.locator("h2", has_text="Failed trials (1)").count() == 1
        browser.close()
    assert problems == []
