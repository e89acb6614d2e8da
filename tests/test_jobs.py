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


def test_run_jobs_hands_each_result_over_as_it_finishes_and_tells_the_time_left(capsys):
    seen = []
    results = run_jobs(
        {i: (operator.mul, i, 10) for i in range(4)},
        2,
        on_result=lambda key, value: seen.append((key, value)) or f"got {value}",
    )
    assert sorted(seen) == sorted(results.items()) == [(i, 10 * i) for i in range(4)]
    lines = capsys.readouterr().err.splitlines()
    assert all(f"got {10 * int(line.split()[-3])}" in line for line in lines)
    assert sum("s left)" in line for line in lines) == 3  # every line but the last


def test_run_jobs_on_a_local_ray_instance_gives_the_same_results():
    pytest.importorskip("ray")
    jobs = {("add", i): (operator.add, i, 1) for i in range(3)}
    assert run_jobs(jobs, 1, ray_address="local") == run_jobs(jobs, 1)
