"""hardwire.jobs.run_jobs: every job's result under its key, listed errors captured, others propagated."""

import operator

import pytest

from hardwire.jobs import run_jobs


def _fail(message: str):
    raise ValueError(message)


def test_run_jobs_returns_every_result_under_its_key_and_reports_progress(capsys):
    results = run_jobs({("add", 1): (operator.add, 1, 2), "mul": (operator.mul, 3, 4)}, workers=2)
    assert results == {("add", 1): 3, "mul": 12}
    progress = capsys.readouterr().err.splitlines()
    assert len(progress) == 2 and all("/2 " in line for line in progress)
    assert any(line.endswith("add 1") for line in progress)


def test_run_jobs_captures_only_the_listed_errors():
    assert run_jobs({"x": (_fail, "first line\nsecond")}, 1, errors=(ValueError,)) == {"x": {"error": "first line"}}
    with pytest.raises(ValueError, match="first line"):
        run_jobs({"x": (_fail, "first line")}, 1)
