"""The protocol names the success test: the presets judge as the authors' evaluation did, and the test is hashed."""

import json

import pytest

from harness.eval.protocol import PRESETS, EvalProtocol, resolve_protocol
from tasks.base import make_task


@pytest.mark.parametrize("preset", ["lewm_v3", "lewm_v1", "wmbench"])
def test_presets_judge_by_the_authors_success_tests(preset):
    assert PRESETS[preset].success_test == "published"


def test_rows_judged_by_different_tests_never_share_a_protocol_hash():
    published = PRESETS["wmbench"]
    coverage = resolve_protocol({"preset": "wmbench", "success_test": "coverage"})
    assert coverage.success_test == "coverage" and coverage.name == "wmbench+custom"
    assert coverage.hash() != published.hash()
    assert json.loads(coverage.to_json())["success_test"] == "coverage"  # rows record which test judged


def test_an_unset_success_test_resolves_to_the_tasks_own_and_hashes_as_naming_it():
    task = make_task("two_room")
    unset = EvalProtocol().resolved(task.default_history, task.default_frameskip, task.success_test)
    named = EvalProtocol(success_test="published").resolved(task.default_history, task.default_frameskip)
    assert unset.success_test == "published" and unset.hash() == named.hash()
    assert EvalProtocol(success_test="coverage").resolved(3, 5, "published").success_test == "coverage"


def test_the_protocols_success_test_builds_the_task_that_judges_and_a_foreign_one_is_refused():
    protocol = resolve_protocol({"preset": "lewm_v3", "success_test": "coverage"})
    assert make_task("pusht", success_test=protocol.success_test).success_test == "coverage"
    with pytest.raises(ValueError, match=r"'coverage'.*two_room.*known tests: published"):
        make_task("two_room", success_test=protocol.success_test)
    with pytest.raises(ValueError, match="protocol.success_test"):
        EvalProtocol(success_test="")
