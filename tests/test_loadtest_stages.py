"""Tests of loadtest.stages: reading a hand-written `chat-broker --stage-times` file and its table."""

from __future__ import annotations

import json

import pytest

from zmq_chat.loadtest.stages import STAGES, parse_stage_times, read_stage_times, stage_table


def _figures(p50: float) -> dict[str, float]:
    return {"p50": p50, "p90": p50 * 2, "p99": p50 * 4, "max": p50 * 10}


def _file(tmp_path, data) -> str:
    path = tmp_path / "stages.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_reads_every_stage_and_the_commits(tmp_path):
    data = {"requests": 1234, "stages": {name: _figures(0.5 + i) for i, name in enumerate(STAGES)},
            "commits": {"count": 40, "ms": _figures(1.0), "wake_ups": _figures(2)}}
    report = read_stage_times(_file(tmp_path, data))
    assert report is not None
    assert report.requests == 1234
    assert report.stages["commit_wait"] == {"p50": 2.5, "p90": 5.0, "p99": 10.0, "max": 25.0}
    assert report.commits["count"] == 40 and report.commits["wake_ups"]["max"] == 20.0
    lines = stage_table(report)
    assert "1,234 requests" in lines[0]
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:2 + len(STAGES)]}
    assert rows["total"] == ["4.500", "9.000", "18.000", "45.000"]
    assert lines[-1].strip().startswith("commits: 40;")


def test_the_format_of_the_task_without_commits(tmp_path):
    data = {"requests": 3, "stages": {name: _figures(1) for name in STAGES}}
    report = read_stage_times(_file(tmp_path, data))
    assert report is not None and report.commits == {}
    assert len(stage_table(report)) == 2 + len(STAGES)


def test_a_missing_file_is_none(tmp_path):
    assert read_stage_times(tmp_path / "absent.json") is None


@pytest.mark.parametrize("data, what", [
    ([], "stages"),
    ({"requests": 1, "stages": {}}, "queued"),
    ({"requests": -1, "stages": {name: _figures(1) for name in STAGES}}, "requests"),
    ({"requests": 1, "stages": {**{name: _figures(1) for name in STAGES}, "send": {"p50": "1"}}}, "send.p50"),
])
def test_a_malformed_file_is_a_value_error(data, what):
    with pytest.raises(ValueError, match=what):
        parse_stage_times(data)


def test_a_file_that_is_not_json_is_a_value_error(tmp_path):
    path = tmp_path / "stages.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        read_stage_times(path)
