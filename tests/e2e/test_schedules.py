"""Schedules through the edge (HTTP/JSON) on the shared mesh: create, list,
get, ticks that make one task each, pause, resume, delete, and bad input
refused naming the field. The fail-over case is in test_faults.py."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from tests.helpers import http_json, schedule_tasks, wait_for


def test_a_cron_schedule_makes_one_task_per_tick_until_paused_and_is_deleted(edge):
    body = {
        "cron": "* * * * * *",  # every second (the sixth field: seconds)
        "time_zone": "Europe/Berlin",
        "catch_up": "ONCE",
        "task": {"task_type": "echo", "params": {"from": "a schedule"}, "result_dir": "scheduled", "priority": "LOW"},
    }
    status, schedule = http_json(edge, "POST", "/v1/schedules", body)
    assert status == 200, schedule
    schedule_id = schedule["schedule_id"]
    assert schedule["catch_up"] == "ONCE" and schedule["paused"] is False
    assert datetime.fromisoformat(schedule["next_tick"]) <= datetime.fromisoformat(schedule["created_at"]) + timedelta(
        seconds=1
    )
    try:
        made = wait_for("three ticks", lambda: m if len(m := schedule_tasks(edge, schedule_id, "echo")) >= 3 else None)
        ticks = [tick for tick, _ in made]
        assert ticks == [ticks[0] + timedelta(seconds=n) for n in range(len(ticks))]  # one per second
        for tick, task in made:
            assert task["params"] == {"from": "a schedule"} and task["priority"] == "LOW"
            assert 0 <= (datetime.fromisoformat(task["created_at"]) - tick).total_seconds() < 1.0
        listed = http_json(edge, "GET", "/v1/schedules")[1]["schedules"]
        assert schedule_id in [s["schedule_id"] for s in listed]
        status, got = http_json(edge, "GET", f"/v1/schedules/{schedule_id}")
        assert status == 200 and got["last_task_id"] and datetime.fromisoformat(got["last_tick"]) >= ticks[-1]
        status, paused = http_json(edge, "POST", f"/v1/schedules/{schedule_id}:pause", {})
        assert status == 200 and paused["paused"] is True
        status, resumed = http_json(edge, "POST", f"/v1/schedules/{schedule_id}:resume", {})
        assert status == 200 and resumed["paused"] is False
    finally:
        status, _ = http_json(edge, "DELETE", f"/v1/schedules/{schedule_id}")
    assert status == 200
    status, gone = http_json(edge, "GET", f"/v1/schedules/{schedule_id}")
    assert status == 404, gone
    assert schedule_tasks(edge, schedule_id, "echo")  # its tasks stay


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"cron": "61 * * * *", "task": {"task_type": "noop", "result_dir": "x"}}, "cron"),
        ({"cron": "0 9 * * *", "time_zone": "Mars/Olympus", "task": {"task_type": "noop", "result_dir": "x"}},
         "time_zone"),
        ({"cron": "0 9 * * *", "interval": "60s", "task": {"task_type": "noop", "result_dir": "x"}}, "cron"),
        ({"interval": "0.1s", "task": {"task_type": "noop", "result_dir": "x"}}, "interval"),
        ({"interval": "60s", "task": {"task_type": "nope", "result_dir": "x"}}, "task_type"),
        ({"interval": "60s", "task": {"task_type": "noop", "result_dir": "/etc"}}, "result_dir"),
        ({"interval": "60s", "task": {"task_type": "noop", "result_dir": "x", "idempotency_key": "k"}}, "task"),
    ],
)  # fmt: skip
def test_bad_schedules_get_400_naming_the_field_and_create_nothing(edge, body, field):
    before = http_json(edge, "GET", "/v1/schedules")[1].get("schedules", [])
    status, error = http_json(edge, "POST", "/v1/schedules", body)
    assert status == 400 and error["code"] == 3 and field in error["message"], error
    assert http_json(edge, "GET", "/v1/schedules")[1].get("schedules", []) == before
