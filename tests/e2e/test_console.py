"""Issue 8: the web console, served through Envoy on the edge port and driven
in headless Chromium (Debian's, through Playwright's Python bindings; no
browser download) against a real mesh with the analytics job running.

Each test saves a screenshot of the page it drove under
``test-artifacts/console/`` (or ``$GRIDMESH_TEST_ARTIFACTS/console``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from gridmesh.config import MeshConfig
from tests.conftest import RunningMesh, free_port, mesh_with_analytics
from tests.e2e.browser import chromium, screenshot
from tests.e2e.nodes import exited, extra_node, listed_workers
from tests.helpers import admin_key, http, http_json, wait_for

LIVE_TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def console_mesh(backing_services: MeshConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningMesh]:
    """A mesh of its own with the analytics job, so the Statistics page has
    data, and its Prometheus server, for the charts of slots and lag."""
    prometheus = {"GRIDMESH_METRICS_PROMETHEUS": "true", "GRIDMESH_METRICS_PROMETHEUS_PORT": str(free_port())}
    with mesh_with_analytics(tmp_path_factory.mktemp("console-mesh"), **prometheus) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(browser: Browser, console_mesh: RunningMesh) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1366, "height": 900}, base_url=f"https://{console_mesh.edge}")
    context.add_init_script(f"sessionStorage.setItem('gridmesh.apiKey', {json.dumps(admin_key())})")  # signed in
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def test_the_console_is_served_on_the_edge_port_beside_the_api(console_mesh):
    edge = console_mesh.edge
    status, body = http(edge, "GET", "/")
    assert status == 200 and b'<div id="app">' in body
    assert http(edge, "GET", "/app.js")[0] == 200
    assert http(edge, "GET", "/no-such-file.js")[0] == 404
    status, error = http_json(edge, "GET", "/v1/no-such-route")
    assert status == 404 and "no API route" in error["message"]
    assert http_json(edge, "GET", "/v1/task-types")[0] == 200


def test_a_word_count_submitted_from_the_form_turns_succeeded_in_the_live_table_without_reloading(page, console_mesh):
    loads: list[str] = []
    page.on("load", lambda p: loads.append(p.url))
    page.goto("/#/tasks")
    expect(page.get_by_text("● live")).to_be_visible()
    page.select_option("select[name=task_type]", "word_count")
    page.fill("textarea[name='params.text']", "to be or not to be")
    page.fill("input[name=result_dir]", "console-test")
    page.click("button[type=submit]")

    submitted = page.get_by_role("status")
    expect(submitted).to_contain_text("Submitted")
    task_id = submitted.locator("a").inner_text()
    row = page.locator(f"tr[data-task-id='{task_id}']")
    expect(row).to_contain_text("SUCCEEDED", timeout=LIVE_TIMEOUT_MS)
    expect(row).to_contain_text("word_count")
    assert len(loads) == 1, f"the page was reloaded: {loads}"
    screenshot(page, "tasks")

    row.locator("a").click()
    expect(page.locator(".task-page")).to_contain_text("SUCCEEDED")
    expect(page.locator("pre.preview")).to_contain_text('"be": 2')
    with page.expect_download() as saving:
        page.get_by_role("button", name="Download result").click()
    assert saving.value.suggested_filename == f"{task_id}.json"
    assert json.loads(Path(saving.value.path()).read_text())["counts"]["be"] == 2
    status, stored = http(console_mesh.edge, "GET", f"/v1/results/{task_id}")
    assert status == 200 and json.loads(stored)["counts"]["be"] == 2
    screenshot(page, "task")


def test_the_console_asks_for_a_key_refuses_a_wrong_one_and_signs_out(browser, console_mesh):
    context = browser.new_context(base_url=f"https://{console_mesh.edge}")  # no key in this tab
    try:
        page = context.new_page()
        page.goto("/#/tasks")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.fill("input[name=api_key]", "gmk_000000000000_" + "x" * 43)
        page.click("button[type=submit]")
        expect(page.get_by_role("alert")).to_contain_text("unknown API key 000000000000")
        page.fill("input[name=api_key]", admin_key())
        page.click("button[type=submit]")
        expect(page.get_by_text("● live")).to_be_visible()
        screenshot(page, "signed-in")
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('gridmesh.apiKey')") is None
    finally:
        context.close()


def test_the_task_table_filters_by_type_and_state_and_pages_by_token(page, console_mesh):
    edge = console_mesh.edge
    ids = [
        http_json(edge, "POST", "/v1/tasks", {"task_type": "echo", "result_dir": "paging"})[1]["task_id"]
        for _ in range(23)
    ]
    wait_for(
        "the echo tasks to end",
        lambda: all(http_json(edge, "GET", f"/v1/tasks/{t}")[1]["state"] == "SUCCEEDED" for t in ids),
    )
    page.goto("/#/tasks")
    page.select_option("select[name=filter_type]", "echo")
    rows = page.locator("tr[data-task-id]")
    expect(rows).to_have_count(20)  # the page size
    expect(page.locator("tr[data-task-id]", has_text="echo")).to_have_count(20)
    page.get_by_role("button", name="older →").click()
    expect(page.get_by_text("page 2")).to_be_visible()
    expect(rows).to_have_count(3)
    shown = set(rows.evaluate_all("rows => rows.map(r => r.dataset.taskId)"))
    assert shown <= set(ids)
    page.get_by_role("button", name="← newer").click()
    expect(rows).to_have_count(20)
    # Live under the type filter (the stream asks the Scheduler for echo tasks only).
    echo = http_json(edge, "POST", "/v1/tasks", {"task_type": "echo", "result_dir": "paging"})[1]["task_id"]
    noop = http_json(edge, "POST", "/v1/tasks", {"task_type": "noop", "result_dir": "paging"})[1]["task_id"]
    expect(page.locator(f"tr[data-task-id='{echo}']")).to_contain_text("SUCCEEDED")
    wait_for("the noop task to end", lambda: http_json(edge, "GET", f"/v1/tasks/{noop}")[1]["state"] == "SUCCEEDED")
    expect(page.locator(f"tr[data-task-id='{noop}']")).to_have_count(0)
    page.select_option("select[name=filter_state]", "FAILED")
    expect(page.get_by_text("No tasks match these filters.")).to_be_visible()


@pytest.mark.parametrize(
    ("task_type", "fill", "field"),
    [
        ("sleep", {"input[name='params.ms']": "-5"}, "params.ms"),
        ("word_count", {}, "params.text"),
        ("noop", {"input[name=result_dir]": "../escape"}, "result_dir"),
    ],
)
def test_an_invalid_form_shows_the_api_error_next_to_its_field_and_queues_nothing(
    page, console_mesh, task_type, fill, field
):
    edge = console_mesh.edge
    before = http_json(edge, "GET", "/v1/tasks?page_size=1000")[1]["tasks"]
    page.goto("/#/tasks")
    page.select_option("select[name=task_type]", task_type)
    for selector, value in fill.items():
        page.fill(selector, value)
    page.click("button[type=submit]")
    error = page.locator(f".field-error[data-field='{field}']")
    expect(error).to_be_visible()
    # The very message the API gives for the same request.
    body: dict[str, Any] = {"task_type": task_type, "params": {}, "result_dir": "console", "priority": "NORMAL"}
    if field == "params.ms":
        body["params"] = {"ms": -5}
    if field == "result_dir":
        body["result_dir"] = "../escape"
    status, api_error = http_json(edge, "POST", "/v1/tasks", body)
    assert status == 400
    expect(error).to_have_text(api_error["message"])
    expect(page.locator(f"[name='{field}']")).to_have_attribute("aria-invalid", "true")
    if field == "params.ms":
        screenshot(page, "tasks-invalid")
    assert http_json(edge, "GET", "/v1/tasks?page_size=1000")[1]["tasks"] == before


def test_a_worker_is_drained_from_the_workers_page(page, console_mesh):
    config, env, edge = console_mesh.config, console_mesh.env, console_mesh.edge
    with extra_node(config, env, edge) as node:
        page.goto("/#/workers")
        row = page.locator(f"tr[data-worker-id='{node.worker_id}']")
        expect(row).to_contain_text("ACTIVE")
        screenshot(page, "workers")
        row.get_by_role("button", name="Drain").click()
        row.get_by_role("button", name=f"Drain {node.worker_id}").click()
        # It had nothing to run: it drains, deregisters and leaves the table.
        expect(row).to_have_count(0, timeout=LIVE_TIMEOUT_MS)
        wait_for("the node to leave", lambda: node.worker_id not in listed_workers(edge))
        wait_for("its process to exit", lambda: exited(config, node))
    # The mesh's own node is still there, and ACTIVE.
    expect(page.locator("tr[data-worker-id]")).to_have_count(1)
    expect(page.locator("tr[data-worker-id]")).to_contain_text("ACTIVE")


def test_the_schedules_page_shows_a_schedule_and_pauses_resumes_and_deletes_it(page, console_mesh):
    edge = console_mesh.edge
    body = {"cron": "*/15 * * * *", "time_zone": "Europe/Berlin", "task": {"task_type": "noop", "result_dir": "c"}}
    status, schedule = http_json(edge, "POST", "/v1/schedules", body)
    assert status == 200, schedule
    page.goto("/#/schedules")
    row = page.locator(f"tr[data-schedule-id='{schedule['schedule_id']}']")
    expect(row).to_contain_text("*/15 * * * *")
    expect(row).to_contain_text("Europe/Berlin")
    screenshot(page, "schedules")
    row.get_by_role("button", name="Pause").click()
    expect(row).to_contain_text("paused", timeout=LIVE_TIMEOUT_MS)
    assert http_json(edge, "GET", f"/v1/schedules/{schedule['schedule_id']}")[1]["paused"] is True
    row.get_by_role("button", name="Resume").click()
    expect(row.get_by_role("button", name="Pause")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0, timeout=LIVE_TIMEOUT_MS)
    assert http_json(edge, "GET", f"/v1/schedules/{schedule['schedule_id']}")[0] == 404


def test_a_task_page_shows_its_timeline_step_by_step_as_it_happens(page, console_mesh):
    status, task = http_json(
        console_mesh.edge, "POST", "/v1/tasks", {"task_type": "sleep", "params": {"ms": 1500}, "result_dir": "c"}
    )
    assert status == 200, task
    page.goto(f"/#/tasks/{task['task_id']}")
    timeline = page.locator("table.timeline tbody tr")
    expect(page.locator("tr[data-step=dispatched]")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("tr[data-step=notified]")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    steps = [row.get_attribute("data-step") for row in timeline.all()]
    assert steps == ["submitted", "dispatched", "started", "stored", "succeeded", "notified"], steps
    # The run is the step that took the 1.5 s the task sleeps: started → stored.
    stored_after = page.locator("tr[data-step=stored] td.gap").inner_text()
    assert stored_after.endswith(" s") and float(stored_after.removesuffix(" s")) >= 1.5, stored_after
    finished = http_json(console_mesh.edge, "GET", f"/v1/tasks/{task['task_id']}")[1]
    assert datetime.fromisoformat(finished["created_at"]) <= datetime.fromisoformat(finished["dispatched_at"])
    expect(page.locator(".timeline-bar .segment")).to_have_count(5)
    screenshot(page, "task-timeline")


def test_a_timed_out_task_shows_its_failure_reason_on_its_page(page, console_mesh):
    edge = console_mesh.edge
    body = {"task_type": "sleep", "params": {"ms": 30_000}, "result_dir": "c", "run_timeout": "1s", "max_attempts": 1}
    status, task = http_json(edge, "POST", "/v1/tasks", body)
    assert status == 200, task
    page.goto(f"/#/tasks/{task['task_id']}")
    expect(page.locator(".failure-reason")).to_have_text("TIMEOUT", timeout=LIVE_TIMEOUT_MS)
    expect(page.locator("pre.task-error")).to_contain_text("run_timeout of 1 s")


def test_the_statistics_page_charts_the_windows_of_get_stats(page, console_mesh):
    edge = console_mesh.edge
    start = datetime.now(UTC) - timedelta(minutes=5)
    noop = {"task_type": "noop", "result_dir": "s"}
    ids = [http_json(edge, "POST", "/v1/tasks", noop)[1]["task_id"] for _ in range(5)]

    def counted() -> bool:
        end = datetime.now(UTC) + timedelta(minutes=1)
        query = f"start_time={start:%Y-%m-%dT%H:%M:%SZ}&end_time={end:%Y-%m-%dT%H:%M:%SZ}&task_type=noop"
        windows = http_json(edge, "GET", f"/v1/stats?{query}")[1]["windows"]
        return sum(int(w["completed"]) for w in windows) >= len(ids)

    wait_for("the analytics job to count the tasks", counted, timeout=120)
    page.goto("/#/stats")
    page.select_option("select[name=range]", "15m")
    chart = page.locator("[data-chart='Completed tasks per window, by type']")
    expect(chart.locator("canvas")).to_be_visible(timeout=LIVE_TIMEOUT_MS)
    expect(chart).to_contain_text("noop")  # the legend names the series
    expect(page.locator("table.windows tbody tr", has_text="noop").first).to_be_visible()
    expect(page.get_by_text(re.compile(r"Analytics last stored a batch .* ago"))).to_be_visible()
    screenshot(page, "statistics")


def test_subscribing_and_unsubscribing_from_the_replication_page(page, console_mesh):
    edge = console_mesh.edge
    page.goto("/#/replication")
    form = page.get_by_role("form", name="subscribe")
    form.locator("input[name=subscriber]").fill("Not A Name")
    form.locator("input[name=publisher]").fill("console-shop")
    form.locator("input[name=entity_type]").fill("customer")
    form.get_by_role("button", name="Subscribe").click()
    expect(form.locator(".field-error[data-field='subscriber']")).to_contain_text("subscriber")
    assert http_json(edge, "GET", "/v1/subscriptions?publisher=console-shop")[1]["subscriptions"] == []

    form.locator("input[name=subscriber]").fill("console-billing")
    form.get_by_role("button", name="Subscribe").click()
    expect(form.get_by_role("status")).to_contain_text("console-billing now receives console-shop's customer events")
    row = page.locator("tr[data-subscription='console-shop/customer/console-billing']")
    expect(row).to_be_visible()
    expect(row.locator("td.num").first).to_have_text("0")  # queue depth of the new, empty queue
    (subscription,) = http_json(edge, "GET", "/v1/subscriptions?publisher=console-shop")[1]["subscriptions"]
    assert subscription["subscriber"] == "console-billing" and subscription["entity_type"] == "customer"
    screenshot(page, "replication")

    row.get_by_role("button", name="Unsubscribe").click()
    expect(row).to_have_count(0)
    assert http_json(edge, "GET", "/v1/subscriptions?publisher=console-shop")[1]["subscriptions"] == []


def test_the_workers_and_replication_pages_chart_slots_and_lag_from_prometheus(page, console_mesh):
    edge = console_mesh.edge
    subscriber = "console-lagging"
    assert (
        http_json(
            edge,
            "POST",
            "/v1/subscriptions",
            {"subscriber": subscriber, "publisher": "console-lag", "entity_type": "item"},
        )[0]
        == 200
    )
    for n in range(3):  # never consumed: they wait in the subscriber's queue
        event = {
            "event_id": str(uuid.uuid4()),
            "publisher": "console-lag",
            "entity_type": "item",
            "entity_id": f"i-{n}",
            "operation": "CREATE",
        }
        status, published = http_json(edge, "POST", "/v1/events", {**event, "version": 1, "payload": {"n": n}})
        assert status == 200, published

    page.goto("/#/workers")
    slots = page.locator("[data-chart='Slots']")
    expect(slots.locator("canvas")).to_be_visible(timeout=60_000)  # once Prometheus scraped the node
    expect(slots).to_contain_text("busy")
    expect(slots).to_contain_text("total")

    page.goto("/#/replication")
    lag = page.locator("[data-chart='Waiting events per subscriber (lag)']")
    expect(lag).to_contain_text(subscriber, timeout=60_000)  # the legend names the subscriber's series
    expect(page.locator("[data-chart='Dead letters per subscriber'] canvas")).to_be_visible()
    screenshot(page, "replication-lag")

    # What the charts read is Prometheus's range API at the edge, for keys that may read the mesh only.
    status, body = http_json(edge, "GET", "/v1/metrics/query_range?query=up&start=0&end=1&step=1", key="")
    assert status == 401 and body["code"] == 16, body
    status, body = http_json(edge, "GET", "/v1/metrics/query_range?query=up&start=0&end=60&step=15", key=admin_key())
    assert status == 200 and body["status"] == "success", body
