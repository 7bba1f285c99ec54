"""The leaderboard reads real typed Parquet rows (harness.report.results) and never ranks across protocols."""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from harness.eval.protocol import PRESETS, EvalProtocol
from harness.report import leaderboard, results, stats
from harness.report.results import ConditionRow, EpisodeRow, load, write_trial

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
TASKS = ("two_room", "pusht")
SKILL = {"oracle": 1.0, "lewm": 0.8, "dino_wm": 0.65, "random": 0.25}  # clean success each controller aims at
ROLE = {"oracle": "ceiling", "random": "floor"}  # the roles the sweep gives its reference controllers
PLAN_MS = {"oracle": 0.0, "lewm": 90.0, "dino_wm": 2400.0, "random": 0.0}
TOKENS = {"lewm": 1, "dino_wm": 256}
# Each tasks.conditions.Condition field's unperturbed value, and how fast synthetic success falls along it.
UNPERTURBED = dict(
    action_noise=0.0, camera_shift=0.0, camera_rotate=0.0, camera_zoom=1.0, sticky_prob=0.0, brightness=0.0, hue=0.0,
    agent_colour=0.0, object_colour=0.0, background_colour=0.0, agent_size=0.0, lighting=0.0,
)  # fmt: skip
SLOPE = dict(
    action_noise=1.5, camera_shift=0.05, camera_rotate=0.01, camera_zoom=0.8, sticky_prob=1.2, brightness=0.5, hue=1.0,
    agent_colour=0.3, object_colour=0.4, background_colour=0.2, agent_size=0.3, lighting=0.5,
)  # fmt: skip
NOISE_AND_SHIFT = {"action_noise": (0.1, 0.2), "camera_shift": (2.0, 4.0)}


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
    protocol: EvalProtocol = PRESETS["wmbench"],
    episodes: int = 30,
    perturbations: dict[str, tuple[float, ...]] = NOISE_AND_SHIFT,
    surprise_auroc: float | None = None,
    variant: str = "",
    role: str | None = None,
    probes: dict[str, tuple[float, float]] | None = None,
    camera_kind: str | None = None,
    cases: str = "",
) -> str:
    """One trial's condition and episode rows, as the trial writes them: every condition on the same cases.

    A case succeeds when its difficulty is below the condition's success level (skill shrunk by the
    perturbation magnitude), so the conditions of a trial are paired case for case.
    """
    role = role if role is not None else ROLE.get(model, "model")
    rng = np.random.default_rng(1000 * seed + len(model) + 7 * len(task))
    trial_id = f"{task}-{model}-{protocol.hash()}-s{seed}{variant}"
    case_seeds = np.arange(episodes) + 10_000 * seed  # (episodes,) shared by all conditions of the trial
    difficulty = case_difficulty(case_seeds)
    conditions = [("clean", "clean", None)]
    conditions += [(f"{axis}={value:g}", axis, value) for axis, values in perturbations.items() for value in values]
    condition_rows, episode_rows = [], []
    for name, axis, magnitude in conditions:
        fields = dict(UNPERTURBED) | ({axis: magnitude} if magnitude is not None else {})
        level = skill * np.prod([1 - SLOPE[k] * abs(v - UNPERTURBED[k]) for k, v in fields.items()])
        success = difficulty < level + rng.normal(0, 0.03)
        plan_ms = np.full(episodes, PLAN_MS.get(model, 50.0)) * rng.uniform(0.9, 1.1, episodes)
        distance = np.where(success, 2.0, 20.0) + rng.uniform(0, 1, episodes)
        common = dict(trial_id=trial_id, task=task, model=model, role=role, variant=variant, seed=seed)
        episode_rows += [
            EpisodeRow(
                **common,
                condition=name,
                axis=axis,
                magnitude=magnitude,
                episode=i,
                case_seed=int(case_seed),
                start=[0.0, 0.0],
                goal=[1.0, 1.0],
                success=bool(success[i]),
                final_distance=float(distance[i]),
                steps=50,
                plan_ms=float(plan_ms[i]),
                start_solved=False,
                protocol_hash=protocol.hash(),
            )
            for i, case_seed in enumerate(case_seeds)
        ]
        wilson = stats.wilson_interval(int(success.sum()), episodes)
        condition_rows.append(
            ConditionRow(
                sweep="synthetic",
                status="ok",
                config="{}",
                protocol=protocol.to_json(),
                protocol_hash=protocol.hash(),
                **common,
                condition=name,
                axis=axis,
                magnitude=magnitude,
                **fields,
                episodes=episodes,
                success_rate=float(success.mean()),
                success_ci_low=wilson.low,
                success_ci_high=wilson.high,
                final_distance=float(distance.mean()),
                plan_ms_median=float(np.median(plan_ms)),
                plan_ms_p95=float(np.percentile(plan_ms, 95)),
                tokens_per_frame=TOKENS.get(model),
                surprise_auroc=surprise_auroc if name == "clean" else None,
                case_fingerprint=cases,
                **(_probe_fields(probes) if probes and name == "clean" else {}),
                camera_kind=camera_kind if axis.startswith("camera_") else None,
            )
        )
    write_trial(str(root), trial_id, condition_rows, episode_rows)
    return trial_id


def _probe_fields(probes: dict[str, tuple[float, float]]) -> dict[str, object]:
    """A clean row's probe columns from {quantity: (Pearson r, R²)}."""
    return dict(
        probe_r2=float(np.mean([r2 for _, r2 in probes.values()])),
        probe_quantities=list(probes),
        probe_pearson_r=[r for r, _ in probes.values()],
        probe_r2_by_quantity=[r2 for _, r2 in probes.values()],
    )


def write_failed_trial(root: Path, *, task: str, model: str, seed: int, error: str, protocol: EvalProtocol) -> str:
    """A trial that raised: one row with status "failed" and its error, as the sweep records it."""
    trial_id = f"{task}-{model}-{protocol.hash()}-s{seed}-failed"
    row = ConditionRow(
        sweep="synthetic",
        trial_id=trial_id,
        status="failed",
        error=error,
        task=task,
        model=model,
        role="model",
        variant="",
        seed=seed,
        config="{}",
        protocol=protocol.to_json(),
        protocol_hash=protocol.hash(),
    )
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
                probes = {"agent": (0.9 + 0.02 * seed, 0.8), "block": (0.5, 0.2 + 0.1 * seed)}
                write_synthetic_trial(
                    root, task=task, model=model, seed=seed, skill=skill, surprise_auroc=auroc,
                    probes=probes if model == "lewm" else None,
                )  # fmt: skip
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


def _curve(board: leaderboard.Leaderboard, task: str, model: str, axis: str) -> leaderboard.Curve:
    (curve,) = [c for c in board.curves if (c.task, c.model, c.axis) == (task, model, axis)]
    return curve


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
    clean = table[table["condition"] == "clean"].set_index(["model", "variant"])
    assert set(clean.index) == {(m, f"planner.name={p}") for m in ("lewm", "random") for p in ("cem", "mppi")}
    assert (clean.loc["lewm", "seeds"] == 2).all()
    assert clean.loc[("lewm", "planner.name=cem"), "success"] > clean.loc[("lewm", "planner.name=mppi"), "success"]
    assert (clean.loc["random", "role"] == "floor").all()
    markdown = leaderboard.render(root)["markdown"].read_text()
    assert "| random (floor) · planner.name=mppi |" in markdown


def test_paired_difference_and_mcnemar_use_matched_cases(tmp_path: Path) -> None:
    """Perturbed successes are a subset of clean ones here, so every discordant pair favours clean."""
    root = tmp_path / "paired"
    noise_only = {"action_noise": (0.1, 0.2)}
    write_synthetic_trial(root, task="two_room", model="lewm", seed=0, skill=0.8, episodes=40, perturbations=noise_only)
    table = leaderboard.build(root).conditions
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
    noise = rows[rows["axis"].isin(["clean", "action_noise"])].sort_values("action_noise")
    curve = _curve(board, "pusht", "lewm", "action_noise")
    assert curve.magnitudes == (0.0, 0.1, 0.2) and curve.success == tuple(noise["success"])
    assert curve.auc == pytest.approx(np.trapezoid(noise["success"], noise["action_noise"]) / 0.2)
    for task in TASKS:
        oracle, random = _curve(board, task, "oracle", "camera_shift"), _curve(board, task, "random", "camera_shift")
        assert oracle.auc > random.auc


def test_every_axis_gets_a_curve_and_an_auc_from_its_unperturbed_value(tmp_path: Path) -> None:
    """Sticky actions, rotation and zoom each get a curve; zoom's starts at the clean row's camera_zoom of 1."""
    root = tmp_path / "axes"
    perturbations = {"sticky_prob": (0.1, 0.25), "camera_rotate": (10.0, 20.0), "camera_zoom": (1.25, 1.5)}
    for model, skill in (("lewm", 0.8), ("random", 0.25)):
        write_synthetic_trial(root, task="pusht", model=model, seed=0, skill=skill, perturbations=perturbations)
    board = leaderboard.build(root)
    assert board.axes == ["camera_rotate", "camera_zoom", "sticky_prob"]  # ConditionRow's column order
    rows = board.conditions[board.conditions["model"] == "lewm"].set_index("condition")
    for axis, values in perturbations.items():
        curve = _curve(board, "pusht", "lewm", axis)
        unperturbed = rows.loc["clean", axis]
        assert curve.clean_magnitude == unperturbed == UNPERTURBED[axis]
        assert curve.magnitudes == (unperturbed, *values)
        success = [rows.loc["clean", "success"], *(rows.loc[f"{axis}={v:g}", "success"] for v in values)]
        assert curve.success == pytest.approx(success)
        assert curve.auc == pytest.approx(np.trapezoid(success, curve.magnitudes) / (values[-1] - unperturbed))

    paths = leaderboard.render(root)
    markdown, html = paths["markdown"].read_text(), paths["html"].read_text()
    sticky = _curve(board, "pusht", "lewm", "sticky_prob")
    for document in (markdown, html):
        assert "Robustness to sticky prob" in document and "Robustness to camera zoom" in document
        assert "1 (clean)" in document and "camera_zoom=1" in document  # zoom's curve starts at 1, not 0
        assert f"{100 * sticky.auc:.1f}" in document
    hash_ = PRESETS["wmbench"].hash()
    for axis in perturbations:
        png = paths[f"robustness-{hash_}-{axis}"]
        assert png.read_bytes().startswith(b"\x89PNG") and f"]({png.name})" in markdown


def test_factor_axes_get_a_curve_from_strength_zero_and_camera_curves_say_how_the_camera_moved(
    tmp_path: Path,
) -> None:
    root = tmp_path / "factors"
    perturbations = {"camera_shift": (2.0, 4.0), "object_colour": (0.5, 1.0), "lighting": (0.5, 1.0)}
    for task, kind in (("cube", "viewpoint"), ("pusht", "pixel")):
        write_synthetic_trial(
            root, task=task, model="lewm", seed=0, skill=0.8, perturbations=perturbations, camera_kind=kind
        )
    board = leaderboard.build(root)
    assert board.axes == ["camera_shift", "object_colour", "lighting"]  # ConditionRow's column order
    rows = board.conditions[board.conditions["task"] == "cube"].set_index("condition")
    for axis in ("object_colour", "lighting"):
        curve = _curve(board, "cube", "lewm", axis)
        assert curve.clean_magnitude == 0.0 and curve.magnitudes == (0.0, 0.5, 1.0)
        success = [rows.loc["clean", "success"], *(rows.loc[f"{axis}={v:g}", "success"] for v in (0.5, 1.0))]
        assert curve.success == pytest.approx(success) and curve.camera_kind is None
        assert curve.auc == pytest.approx(np.trapezoid(success, curve.magnitudes))
    assert _curve(board, "cube", "lewm", "camera_shift").camera_kind == "viewpoint"
    assert _curve(board, "pusht", "lewm", "camera_shift").camera_kind == "pixel"
    markdown = leaderboard.render(root)["markdown"].read_text()
    assert "Robustness to object colour" in markdown and "Robustness to lighting" in markdown
    assert "Camera change (cube: viewpoint; pusht: pixel)" in markdown


def test_role_decides_floor_and_ceiling_not_the_name(tmp_path: Path) -> None:
    """A world model named "random" is a model; the controllers with roles floor and ceiling bound the table."""
    root = tmp_path / "roles"
    entries = {
        "random": ("model", 0.6),
        "uniform": ("floor", 0.9),
        "scripted": ("ceiling", 0.3),
        "lewm": ("model", 0.8),
    }
    for model, (role, skill) in entries.items():
        write_synthetic_trial(root, task="two_room", model=model, seed=0, skill=skill, role=role)
    board = leaderboard.build(root)
    clean = board.conditions[board.conditions["condition"] == "clean"]
    assert list(clean["model"]) == ["scripted", "lewm", "random", "uniform"]  # despite uniform's 90% success
    markdown = leaderboard.to_markdown(board)
    assert "| scripted (ceiling) |" in markdown and "| uniform (floor) |" in markdown and "| random |" in markdown
    assert "random (floor)" not in markdown
    floor_rows = re.findall(r'<tr class="floor">(.*?)</tr>', leaderboard.to_html(board))
    assert floor_rows and all("uniform (floor)" in row and ">random<" not in row for row in floor_rows)


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
    assert "### Failed trials (1)" in markdown
    assert "FloatingPointError: loss became NaN at step 120" in markdown
    assert "✗ 1 failed" in markdown
    assert "Traceback (most recent call last)" in leaderboard.to_html(board)  # the whole error, folded in the page
    assert any("1 failed trial(s)" in warning for warning in board.warnings)


def test_probes_are_tabled_per_named_quantity_averaged_over_seeds(board: leaderboard.Leaderboard, sweep: Path) -> None:
    probes = board.probes[board.probes["task"] == "pusht"].set_index("quantity")
    assert set(board.probes["model"]) == {"lewm"} and list(probes.index) == ["agent", "block"]
    assert probes.loc["agent", "pearson_r"] == pytest.approx(0.91) and probes.loc["block", "r2"] == pytest.approx(0.25)
    assert (probes["seeds"] == 2).all()
    markdown = leaderboard.to_markdown(board)
    assert (
        "Linear probes of the latent (held-out)" in markdown
        and "| pusht | lewm | agent | 0.910 | 0.800 | 2 |" in markdown
    )


def test_iqm_and_probability_of_improvement_per_model(board: leaderboard.Leaderboard) -> None:
    models = board.models.set_index("model")
    assert list(board.models["model"])[:2] == ["oracle", "lewm"]
    assert models.loc["lewm", "iqm_ci_low"] <= models.loc["lewm", "iqm"] <= models.loc["lewm", "iqm_ci_high"]
    assert models.loc["lewm", "tasks"] == "pusht, two_room"
    pairs = board.improvement
    lewm_vs_random = pairs[(pairs["model_x"] == "lewm") & (pairs["model_y"] == "random")]
    assert len(lewm_vs_random) == len(TASKS) and (lewm_vs_random["p_x_better"] == 1.0).all()


def test_wide_interval_is_warned_in_table_and_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "small"
    noise_only = {"action_noise": (0.1, 0.2)}
    write_synthetic_trial(root, task="two_room", model="lewm", seed=0, skill=0.6, episodes=12, perturbations=noise_only)
    with caplog.at_level(logging.WARNING, logger="harness.report.leaderboard"):
        paths = leaderboard.render(root)
    assert "⚠ CI ±" in paths["markdown"].read_text()
    assert "exceed ±10 pp" in caplog.text and "two_room/lewm/clean" in caplog.text


def test_write_puts_markdown_html_and_every_figure_it_links_in_one_folder(sweep: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "board"
    written = leaderboard.write(leaderboard.build(sweep), out_dir)
    markdown = written["markdown"].read_text()
    assert "| task | model | condition | success % [95% CI] |" in markdown
    hash_ = PRESETS["wmbench"].hash()
    stems = {
        f"robustness-{hash_}-action_noise",
        f"robustness-{hash_}-camera_shift",
        f"pareto-{hash_}",
        f"surprise-{hash_}",
    }
    assert {p.stem for p in out_dir.glob("*.png")} == stems
    assert sorted(re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown)) == sorted(f"{stem}.png" for stem in stems)


@pytest.mark.parametrize("layout", ["missing", "empty"])
def test_missing_or_empty_results_raise_naming_the_path(tmp_path: Path, layout: str) -> None:
    root = tmp_path / "nothing-here"
    if layout == "empty":
        (root / "trials").mkdir(parents=True)
    with pytest.raises(leaderboard.NoResultsError, match=re.escape(str(root))) as raised:
        leaderboard.build(root)
    assert len(str(raised.value).splitlines()) == 1


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
    assert '<tr class="regression">' in leaderboard.to_html(board)


def test_results_without_episode_rows_fall_back_to_condition_counts(tmp_path: Path) -> None:
    root = tmp_path / "no-episodes"
    noise_only = {"action_noise": (0.1, 0.2)}
    write_synthetic_trial(root, task="two_room", model="lewm", seed=0, skill=0.7, episodes=20, perturbations=noise_only)
    shutil.rmtree(root / "episodes")
    row = leaderboard.build(root).conditions.set_index("condition").loc["clean"]
    rate = pd.read_parquet(next((root / "trials").glob("*.parquet"))).set_index("condition").loc["clean"]
    assert row["success"] == pytest.approx(rate["success_rate"])
    assert pd.isna(row["delta_vs_clean"])  # no case seeds: no pairing claimed


def test_rows_written_before_roles_and_axes_are_shown_as_models_with_a_warning_to_rerun(tmp_path: Path) -> None:
    """Old result folders lack role, variant, axis and magnitude (they load as null); nothing is parsed from names."""
    root, old = tmp_path / "new", tmp_path / "old"
    write_synthetic_trial(root, task="two_room", model="random", seed=0, skill=0.3)
    columns = {"role": None, "variant": None, "axis": None, "magnitude": None}
    conditions = [
        dataclasses.replace(ConditionRow(**{k: None if _missing(v) else v for k, v in row.items()}), **columns)
        for row in load(str(root)).to_dict("records")
    ]
    episodes = [
        dataclasses.replace(EpisodeRow(**row), **columns) for row in load(str(root), "episodes").to_dict("records")
    ]
    write_trial(str(old), conditions[0].trial_id, conditions, episodes)
    board = leaderboard.build(old)
    assert (board.conditions["role"] == "model").all() and (board.conditions["variant"] == "").all()
    assert board.curves == [] and board.models.empty
    assert any("re-run them" in warning for warning in board.warnings)
    assert "| two_room | random | clean |" in leaderboard.to_markdown(board)


def _missing(value: object) -> bool:
    return not isinstance(value, list | str) and pd.isna(value)


class _PageText(HTMLParser):
    """Headings, paragraphs and table rows of a page as text; the folded detail of a cell (<pre>) left out."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks: list[tuple[str, ...]] = []  # ("heading", text) | ("note", text) | ("row", cell, ...)
        self.images = 0
        self._text: list[str] | None = None
        self._row: list[str] | None = None
        self._in_pre = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("h1", "h2", "h3", "h4", "p", "th", "td"):
            self._text = []
        elif tag == "tr":
            self._row = []
        elif tag == "pre":
            self._in_pre = True
        elif tag == "img":
            self.images += 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h1", "h2", "h3", "h4", "p"):
            self.blocks.append(("heading" if tag != "p" else "note", "".join(self._text or [])))
            self._text = None
        elif tag in ("th", "td") and self._row is not None:
            self._row.append("".join(self._text or []))
            self._text = None
        elif tag == "tr" and self._row is not None:
            self.blocks.append(("row", *self._row))
            self._row = None
        elif tag == "pre":
            self._in_pre = False

    def handle_data(self, data: str) -> None:
        if self._text is not None and not self._in_pre:
            self._text.append(data)


def _markdown_blocks(markdown: str) -> tuple[list[tuple[str, ...]], int]:
    """The same blocks read from the Markdown, and its number of images."""
    blocks, images = [], 0
    for part in markdown.strip().split("\n\n"):
        if part.startswith("#"):
            blocks.append(("heading", part.lstrip("#").strip().replace("`", "")))
        elif part.startswith("!["):
            images += 1
        elif part.startswith("|"):
            for line in part.splitlines():
                cells = [cell.replace("\\|", "|") for cell in re.split(r"(?<!\\) \| ", line[2:-2])]
                cells = [re.sub(r"\[([^]]*)\]\((?:<[^>]*>|[^)]*)\)", r"\1", cell) for cell in cells]  # a link: its text
                if set(cells) != {"---"}:
                    blocks.append(("row", *cells))
        else:
            blocks.append(("note", part.replace("`", "")))
    return blocks, images


def test_markdown_and_html_show_the_same_sections_and_cells(sweep: Path, tmp_path: Path) -> None:
    root = tmp_path / "again"
    shutil.copytree(sweep, root)
    board = leaderboard.build(root, baseline=sweep)  # a baseline column too
    written = leaderboard.write(board, tmp_path / "board")
    page = _PageText()
    page.feed(written["html"].read_text())
    blocks, images = _markdown_blocks(written["markdown"].read_text())
    assert page.blocks == blocks
    assert page.images == images == 4  # two robustness curves, Pareto, surprise
    titles = [text for kind, text, *_ in blocks if kind == "heading"]
    assert "Robustness to action noise" in titles and "Robustness to camera shift" in titles
    assert sum(kind == "row" for kind, *_ in blocks) > len(board.conditions)


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
        assert images.count() == 4  # robustness to action noise and to camera shift, Pareto, surprise
        assert all(images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0") for i in range(4))
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


def test_a_trial_whose_files_disagree_is_named_and_left_out_of_every_statistic(tmp_path: Path) -> None:
    root = tmp_path / "disagree"
    kept = write_synthetic_trial(root, task="two_room", model="lewm", seed=0, skill=0.8)
    broken = write_synthetic_trial(root, task="two_room", model="lewm", seed=1, skill=0.8)
    path = root / "episodes" / f"{broken}.parquet"
    episodes = pd.read_parquet(path)
    episodes[episodes["condition"] != "clean"].to_parquet(path)  # readable, but the clean episodes are gone
    board = leaderboard.build(root)
    assert list(board.left_out) == [broken] and "'clean' reports 30 episodes but 0 are stored" in board.left_out[broken]
    clean = board.conditions.set_index("condition").loc["clean"]
    assert clean["seeds"] == 1 and clean["episodes"] == 30  # the intact trial alone
    assert results.trial_done(str(root), kept) and not results.trial_done(str(root), broken)


# --------------------------------------------------------------------------- several folders on one board


def test_folders_and_globs_expand_in_the_order_given_each_once(tmp_path: Path) -> None:
    for name in ("a2", "a1", "b"):
        (tmp_path / name).mkdir()
    folders = leaderboard.expand([tmp_path / "b", f"{tmp_path}/a*", tmp_path / "a1"])
    assert folders == [str(tmp_path / name) for name in ("b", "a1", "a2")]
    with pytest.raises(leaderboard.NoFoldersError, match=re.escape(f"{tmp_path}/z*")):
        leaderboard.expand([f"{tmp_path}/z*"])


def test_a_folder_on_another_protocol_is_refused_naming_the_field_that_differs(tmp_path: Path) -> None:
    board, late = tmp_path / "board", tmp_path / "late"
    write_synthetic_trial(board, task="two_room", model="lewm", seed=0, skill=0.8, cases="c0")
    fewer = dataclasses.replace(PRESETS["wmbench"], episodes=3)
    write_synthetic_trial(late, task="two_room", model="dino_wm", seed=0, skill=0.6, protocol=fewer, cases="c0")
    write_synthetic_trial(late, task="pusht", model="dino_wm", seed=0, skill=0.6, cases="p0")  # a task no one ran
    merged = leaderboard.build([board, late])
    (refusal,) = merged.refused
    assert (refusal.source.label, refusal.task, refusal.protocol_hash) == ("late", "two_room", fewer.hash())
    assert f"differs from the board's {PRESETS['wmbench'].hash()} in protocol field(s) episodes 3 vs 50" in (
        refusal.describe()
    )
    ranked = merged.conditions[merged.conditions["condition"] == "clean"]
    assert sorted(zip(ranked["task"], ranked["model"], ranked["source"], strict=True)) == [
        ("pusht", "dino_wm", "late"), ("two_room", "lewm", "board"),
    ]  # fmt: skip
    markdown = leaderboard.to_markdown(merged)
    assert "| two_room | lewm | board | clean |" in markdown and refusal.describe() in markdown


def test_rows_without_a_case_fingerprint_are_ranked_only_within_their_own_folder(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    for model, skill in (("lewm", 0.8), ("random", 0.2)):  # written before rows recorded their cases
        write_synthetic_trial(old, task="two_room", model=model, seed=0, skill=skill)
    write_synthetic_trial(new, task="two_room", model="dino_wm", seed=0, skill=0.6, cases="c0")
    alone = leaderboard.build(old)
    assert not alone.refused and len(alone.conditions) == 2 * 5  # one folder: ranked as always
    (joining_old,) = leaderboard.build([old, new]).refused
    assert joining_old.source.label == "new" and "the board's two_room rows" in joining_old.reason
    assert "carry no case fingerprint" in joining_old.reason and "cases are unknown" in joining_old.reason
    founded_by_new = leaderboard.build([new, old])
    (joining_new,) = founded_by_new.refused
    assert joining_new.source.label == "old" and "its rows carry no case fingerprint" in joining_new.reason
    assert "ranked only within their own folder" in joining_new.reason
    assert set(founded_by_new.conditions["model"]) == {"dino_wm"}


def test_a_folder_whose_rows_ran_several_case_sets_is_ranked_as_one_sweep_with_a_warning(tmp_path: Path) -> None:
    root = tmp_path / "mixed-cases"
    write_synthetic_trial(root, task="two_room", model="lewm", seed=0, skill=0.8, cases="c0", variant="data.seed=0")
    write_synthetic_trial(root, task="two_room", model="lewm", seed=0, skill=0.8, cases="c1", variant="data.seed=1")
    board = leaderboard.build(root)
    assert not board.refused and set(board.conditions["variant"]) == {"data.seed=0", "data.seed=1"}
    assert any("2 different case sets (c0, c1)" in warning for warning in board.warnings)


def test_a_folder_on_other_cases_is_refused_and_one_on_the_same_cases_ranks_beside_the_board(tmp_path: Path) -> None:
    board, same, other = tmp_path / "board", tmp_path / "same", tmp_path / "other"
    write_synthetic_trial(board, task="two_room", model="lewm", seed=0, skill=0.8, cases="c0")
    write_synthetic_trial(same, task="two_room", model="lewm", seed=0, skill=0.5, cases="c0")  # the same trial again
    write_synthetic_trial(other, task="two_room", model="dino_wm", seed=0, skill=0.6, cases="c1")
    merged = leaderboard.build([board, same, other])
    (refusal,) = merged.refused
    assert refusal.source.label == "other" and "cases differ (case fingerprint c1 vs the board's c0" in refusal.reason
    clean = merged.conditions[merged.conditions["condition"] == "clean"].set_index("source")
    assert list(clean.index) == ["board", "same"] and (clean["seeds"] == 1).all()  # two entries, never pooled
    assert clean.loc["board", "success"] > clean.loc["same", "success"]


# --------------------------------------------------------------------------- the rare-state study

RARE_SKILL = {"oracle": 1.0, "lewm": 0.8, "dino_wm": 0.65, "pldm": 0.5, "random": 0.25}  # table order


def case_surprise(model: str, rarity: np.ndarray, case_seeds: np.ndarray) -> np.ndarray:
    """A world model's synthetic surprise per case: LeWM's rises with rarity, PLDM's falls with it, DINO-WM's is
    rarity plus noise; reference controllers have none (NaN)."""
    noise = np.array([np.random.default_rng([int(seed), 1]).normal() for seed in case_seeds])
    by_model = {"lewm": 1 + rarity, "pldm": 5 - rarity, "dino_wm": rarity + noise}
    return by_model.get(model, np.full(len(rarity), np.nan))


def write_rarity(root: Path, buckets: int = 4, surprise: bool = True) -> None:
    """RESULTS/rarity.parquet as `python -m harness stress rarity` writes it: a case's rarity is its difficulty here
    (rare cases are hard), buckets are quantiles of each task's distinct cases; one RarityRow per trial × case,
    with the world models' surprise (:func:`case_surprise`) unless ``surprise`` is False."""
    cases = load(str(root), "episodes").drop_duplicates(["trial_id", "case_seed"])
    cases = cases.assign(rarity=3 * case_difficulty(cases["case_seed"].to_numpy()))
    cases["surprise"] = np.nan
    for model, rows in cases.groupby("model"):
        cases.loc[rows.index, "surprise"] = case_surprise(model, rows["rarity"].to_numpy(), rows["case_seed"])
    rows = []
    for _, task_cases in cases.groupby("task"):
        distinct = task_cases.drop_duplicates("case_seed")["rarity"].to_numpy()
        edges = np.quantile(distinct, np.linspace(0, 1, buckets + 1))
        bucket = np.clip(np.searchsorted(edges, task_cases["rarity"], side="right") - 1, 0, buckets - 1)
        rows += [
            results.RarityRow(
                trial_id=case.trial_id,
                task=case.task,
                protocol_hash=case.protocol_hash,
                case_seed=int(case.case_seed),
                start_rarity=case.rarity,
                goal_rarity=case.rarity / 2,
                rarity=case.rarity,
                bucket=int(b),
                buckets=buckets,
                rarity_k=5,
                surprise=None if np.isnan(case.surprise) or not surprise else float(case.surprise),
            )  # fmt: skip
            for case, b in zip(task_cases.itertuples(), bucket, strict=True)
        ]
    results.write_atomic(results.to_table(rows, results.RarityRow), str(root), results.RARITY_FILE)


def write_replays(root: Path, trial_ids: list[str], missing: int = 0) -> list[results.ReplayRow]:
    """RESULTS/replays.parquet and its strips, as `python -m harness replay-failures` leaves them (the first
    ``missing`` strips not drawn)."""
    rows = []
    for index, trial_id in enumerate(trial_ids):
        task, model = trial_id.split("-")[:2]
        strip = f"{results.STRIPS_DIR}/{trial_id}_0.png"
        rows.append(
            results.ReplayRow(
                trial_id=trial_id, failure_row=0, task=task, model=model, role=ROLE.get(model, "model"), variant="",
                seed=0, protocol_hash=PRESETS["wmbench"].hash(), condition="action_noise=0.31", case_seed=7 + index,
                start_rarity=1.5, goal_rarity=2.25, recorded_success=False, recorded_final_distance=17.25,
                success=False, final_distance=17.25, strip=strip,
            )
        )  # fmt: skip
        if index >= missing:
            (root / strip).parent.mkdir(parents=True, exist_ok=True)
            (root / strip).write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    results.write_atomic(results.to_table(rows, results.ReplayRow), str(root), results.REPLAYS_FILE)
    return rows


@pytest.fixture(scope="module")
def rare_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two tasks × (oracle, lewm, pldm, dino_wm, random) × 2 seeds × 40 cases, with rarity rows and two replays."""
    root = tmp_path_factory.mktemp("results") / "stress"
    trial_ids = []
    for task in TASKS:
        for model, skill in RARE_SKILL.items():
            for seed in (0, 1):
                trial_ids.append(
                    write_synthetic_trial(
                        root,
                        task=task,
                        model=model,
                        seed=seed,
                        skill=skill,
                        episodes=40,
                        perturbations={"action_noise": (0.2,)},
                    )  # fmt: skip
                )
    write_rarity(root)
    write_replays(root, [t for t in trial_ids if "-lewm-" in t and t.endswith("s0")])
    return root


@pytest.fixture(scope="module")
def rare_board(rare_sweep: Path) -> leaderboard.Leaderboard:
    return leaderboard.build(rare_sweep)


def _rarity_curve(board: leaderboard.Leaderboard, task: str, model: str) -> leaderboard.RarityCurve:
    (curve,) = [c for c in board.rarity if (c.task, c.model) == (task, model)]
    return curve


def test_success_by_rarity_is_wilson_per_shared_quartile_most_common_first(
    rare_sweep: Path, rare_board: leaderboard.Leaderboard
) -> None:
    episodes = load(str(rare_sweep), "episodes")
    rarity = pd.read_parquet(rare_sweep / results.RARITY_FILE)
    clean = episodes[episodes["condition"] == "clean"].merge(rarity, on=["trial_id", "case_seed", "task"])
    assert clean.groupby(["task", "case_seed"])["bucket"].nunique().eq(1).all()  # one bucket per case, every model
    for task in TASKS:
        assert [c.model for c in rare_board.rarity if c.task == task] == list(RARE_SKILL)  # ceiling … floor
        for model in RARE_SKILL:
            curve = _rarity_curve(rare_board, task, model)
            mine = clean[(clean["task"] == task) & (clean["model"] == model)]
            assert curve.buckets == 4 and sum(curve.episodes) == len(mine) == 80
            for bucket in range(4):
                outcomes = mine.loc[mine["bucket"] == bucket, "success"]
                wilson = stats.wilson_interval(int(outcomes.sum()), len(outcomes))
                assert curve.episodes[bucket] == len(outcomes)
                assert (curve.success[bucket], curve.success_ci_low[bucket], curve.success_ci_high[bucket]) == (
                    pytest.approx(wilson.estimate),
                    pytest.approx(wilson.low),
                    pytest.approx(wilson.high),
                )
            assert curve.gap == pytest.approx(curve.success[3] - curve.success[0])
            assert curve.gap_ci_low <= curve.gap <= curve.gap_ci_high
    lewm = _rarity_curve(rare_board, "two_room", "lewm")
    assert lewm.success[0] > lewm.success[3] and lewm.gap_ci_high < 0  # rare cases are the hard ones here

    markdown = leaderboard.to_markdown(rare_board)
    header = next(line for line in markdown.splitlines() if line.startswith("| task | model | Q1"))
    assert header.startswith("| task | model | Q1 (most common) | Q2 | Q3 | Q4 (rarest) | rarest − most common")
    cells = f"{100 * lewm.success[0]:.1f} [{100 * lewm.success_ci_low[0]:.1f}, {100 * lewm.success_ci_high[0]:.1f}]"
    row = next(line for line in markdown.splitlines() if line.startswith(f"| two_room | lewm | {cells} |"))
    assert f"{100 * lewm.gap:+.1f} [{100 * lewm.gap_ci_low:+.1f}, {100 * lewm.gap_ci_high:+.1f}]" in row
    assert "| two_room | random (floor) |" in markdown and "unpaired" in markdown


def test_surprise_by_rarity_is_the_mean_per_shared_quartile_and_spearman_rank_correlation(
    rare_sweep: Path, rare_board: leaderboard.Leaderboard
) -> None:
    from scipy.stats import spearmanr

    episodes = load(str(rare_sweep), "episodes")
    rarity = pd.read_parquet(rare_sweep / results.RARITY_FILE)
    clean = episodes[episodes["condition"] == "clean"].merge(rarity, on=["trial_id", "case_seed", "task"])
    for task in TASKS:
        for model in ("lewm", "pldm", "dino_wm"):
            curve = _rarity_curve(rare_board, task, model)
            mine = clean[(clean["task"] == task) & (clean["model"] == model)]
            assert curve.surprise_pairs == len(mine) == 80  # 2 seeds × 40 cases, pooled
            expected = [mine.loc[mine["bucket"] == bucket, "surprise"].mean() for bucket in range(4)]
            assert curve.surprise == pytest.approx(expected)
            assert curve.surprise_spearman == pytest.approx(spearmanr(mine["rarity"], mine["surprise"]).statistic)
        lewm, pldm, dino = (_rarity_curve(rare_board, task, model) for model in ("lewm", "pldm", "dino_wm"))
        assert lewm.surprise_spearman == pytest.approx(1.0) and pldm.surprise_spearman == pytest.approx(-1.0)
        assert 0.5 < dino.surprise_spearman < 1.0  # rarity plus noise: a rank correlation short of 1
        rarest = clean[(clean["task"] == task) & (clean["model"] == "lewm") & (clean["bucket"] == 3)]
        assert lewm.surprise[3] == pytest.approx(1 + rarest["rarity"].mean())  # LeWM's surprise is 1 + rarity
        for model in ("oracle", "random"):  # reference controllers have no model to be surprised
            curve = _rarity_curve(rare_board, task, model)
            assert curve.surprise_pairs == 0 and np.isnan(curve.surprise_spearman) and np.isnan(curve.surprise).all()

    markdown = leaderboard.to_markdown(rare_board)
    section = markdown.split("### Success by rarity")[1].split("\n### ")[0].splitlines()
    header = next(line for line in section if line.startswith("| task | model | Q1"))
    assert header.endswith("| surprise Q1 | surprise Q2 | surprise Q3 | surprise Q4 | Spearman ρ rarity–surprise |")
    lewm = _rarity_curve(rare_board, "two_room", "lewm")
    row = next(line for line in section if line.startswith("| two_room | lewm |"))
    means = " | ".join(f"{value:#.3g}" for value in lewm.surprise)
    assert row.endswith(f"| {means} | +1.00 (n = 80) |")
    assert next(line for line in section if line.startswith("| two_room | pldm |")).endswith("| -1.00 (n = 80) |")
    floor = next(line for line in section if line.startswith("| two_room | random (floor) |"))
    assert floor.endswith("| — | — | — | — | — |")
    assert any(line.startswith("Surprise: a world model's mean one-step latent prediction error") for line in section)


def test_rarity_rows_without_surprise_show_success_by_rarity_alone(rare_sweep: Path, tmp_path: Path) -> None:
    root = tmp_path / "no-surprise"
    shutil.copytree(rare_sweep, root)
    write_rarity(root, surprise=False)
    table = pd.read_parquet(root / results.RARITY_FILE).drop(columns="surprise")  # as written before the column
    table.to_parquet(root / results.RARITY_FILE)
    board = leaderboard.build(root)
    assert not any(results.RARITY_FILE in warning for warning in board.warnings)
    assert len(board.rarity) == len(TASKS) * len(RARE_SKILL) and all(c.surprise_pairs == 0 for c in board.rarity)
    markdown = leaderboard.to_markdown(board)
    assert "### Success by rarity" in markdown and "surprise Q1" not in markdown and "Surprise:" not in markdown


def test_models_are_compared_on_the_same_rare_cases(rare_sweep: Path, rare_board: leaderboard.Leaderboard) -> None:
    pairs = rare_board.rarity_pairs
    assert set(pairs["model_x"]) | set(pairs["model_y"]) == {"lewm", "pldm", "dino_wm"}  # world models only
    assert len(pairs) == len(TASKS) * 3
    (pair,) = pairs[
        (pairs["task"] == "pusht") & (pairs["model_x"] == "lewm") & (pairs["model_y"] == "pldm")
    ].itertuples()
    rarity = pd.read_parquet(rare_sweep / results.RARITY_FILE)[["trial_id", "case_seed", "bucket"]]
    episodes = load(str(rare_sweep), "episodes").merge(rarity, on=["trial_id", "case_seed"])
    clean = episodes[(episodes["condition"] == "clean") & (episodes["task"] == "pusht")]
    by_case = clean.pivot_table(index=["seed", "case_seed", "bucket"], columns="model", values="success").reset_index()
    rare, common = by_case[by_case["bucket"] == 3], by_case[by_case["bucket"] == 0]
    lewm_only, pldm_only = int((rare["lewm"] > rare["pldm"]).sum()), int((rare["lewm"] < rare["pldm"]).sum())
    assert pair.rarest_pairs == len(rare) and pair.common_pairs == len(common)
    assert pair.rarest_difference == pytest.approx(rare["lewm"].mean() - rare["pldm"].mean())
    assert pair.mcnemar_p == pytest.approx(stats.mcnemar_exact(pldm_only, lewm_only))
    gap_lewm, gap_pldm = (rare[m].mean() - common[m].mean() for m in ("lewm", "pldm"))
    assert pair.gap_difference == pytest.approx(gap_lewm - gap_pldm)
    assert pair.rarest_ci_low <= pair.rarest_difference <= pair.rarest_ci_high
    markdown = leaderboard.to_markdown(rare_board)
    assert "### Rare cases, models compared case for case" in markdown
    assert f"| pusht | lewm | pldm | {100 * pair.rarest_difference:+.1f} [" in markdown


def test_buckets_not_shared_by_every_trial_are_never_paired(rare_sweep: Path, tmp_path: Path) -> None:
    root = tmp_path / "unshared"
    shutil.copytree(rare_sweep, root)
    rarity = pd.read_parquet(root / results.RARITY_FILE)
    lewm = rarity["trial_id"].str.contains("-lewm-") & (rarity["task"] == "two_room")
    rarity.loc[lewm, "bucket"] = 3 - rarity.loc[lewm, "bucket"]  # LeWM's data made other cases rare
    rows = [results.RarityRow(**row) for row in rarity.to_dict("records")]
    results.write_atomic(results.to_table(rows, results.RarityRow), str(root), results.RARITY_FILE)
    board = leaderboard.build(root)
    assert set(board.rarity_pairs["task"]) == {"pusht"} and len(board.rarity) == len(TASKS) * len(RARE_SKILL)
    assert any("not shared by every trial on two_room" in warning for warning in board.warnings)


def test_replayed_failures_link_their_strips_relative_to_the_page(rare_sweep: Path, tmp_path: Path) -> None:
    written = leaderboard.render(rare_sweep, out_dir=tmp_path / "page")  # the page away from the results folder
    markdown, html = written["markdown"].read_text(), written["html"].read_text()
    assert "## Replayed failures (2)" in markdown and "<h2>Replayed failures (2)</h2>" in html
    md_links = re.findall(r"\]\(([^)]+\.png)\)", markdown)
    html_links = re.findall(r'<a href="([^"]+)">', html)
    strips = [link for link in md_links if "strips/" in link]
    assert len(strips) == 2 and strips == html_links
    for link in strips:
        assert not Path(link).is_absolute() and (written["markdown"].parent / link).resolve().is_file()
    assert (written["markdown"].parent / strips[0]).resolve() == (rare_sweep / "strips" / Path(strips[0]).name)
    row = next(line for line in markdown.splitlines() if "two_room-lewm-" in line and "strips/" in line)
    assert "| two_room | lewm | 0 | action_noise=0.31 | 0 | no (no) | 17.250 (17.250) | 1.50 / 2.25 |" in row
    hash_ = PRESETS["wmbench"].hash()
    assert written[f"rarity-{hash_}"].read_bytes().startswith(b"\x89PNG") and f"](rarity-{hash_}.png)" in markdown


def test_a_missing_strip_is_named_not_linked(rare_sweep: Path, tmp_path: Path) -> None:
    root = tmp_path / "missing"
    shutil.copytree(rare_sweep, root)
    shutil.rmtree(root / results.STRIPS_DIR)
    write_replays(root, sorted(p.stem for p in (root / "trials").glob("*-lewm-*s0*")), missing=1)
    board = leaderboard.build(root)
    assert any("1 replayed failure strip(s) are missing" in warning for warning in board.warnings)
    markdown = leaderboard.write(board, tmp_path / "page")["markdown"].read_text()
    assert len(re.findall(r"\]\([^)]*strips/[^)]+\.png\)", markdown)) == 1 and "missing: strips/" in markdown


def test_rarity_rows_from_an_older_wmbench_are_named_and_left_off(tmp_path: Path) -> None:
    root = tmp_path / "old-rarity"
    write_synthetic_trial(root, task="two_room", model="lewm", seed=0, skill=0.8)
    summary = pd.DataFrame({"task": ["two_room"], "model": ["lewm"], "bucket": [0], "success_rate": [0.5]})
    summary.to_parquet(root / results.RARITY_FILE)  # the per-bucket summary the command used to write
    board = leaderboard.build(root)
    assert board.rarity == [] and board.rarity_pairs.empty
    (warning,) = [w for w in board.warnings if results.RARITY_FILE in w]
    assert "lacks column(s) trial_id" in warning and "stress rarity" in warning


def test_rarity_and_replays_read_the_same_in_markdown_and_html(rare_sweep: Path, tmp_path: Path) -> None:
    written = leaderboard.write(leaderboard.build(rare_sweep), tmp_path / "board")
    page = _PageText()
    page.feed(written["html"].read_text())
    blocks, images = _markdown_blocks(written["markdown"].read_text())
    assert page.blocks == blocks and page.images == images
    titles = [text for kind, text, *_ in blocks if kind == "heading"]
    assert titles.index("Success by rarity") < titles.index("Rare cases, models compared case for case")
    assert titles.index("Replayed failures (2)") < titles.index("Failed trials (0)")
