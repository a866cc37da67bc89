"""Result rules of SPEC §2 StoreKeeper / §3: where a result is stored, what a
store request may carry, and how ListResults pages (pure core, no I/O)."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from gridmesh.common.errors import InvalidArgument, ResourceExhausted
from gridmesh.core.results import (
    DEFAULT_CONTENT_TYPE,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    ResultKey,
    StoredResult,
    check_list_query,
    check_store_request,
    decode_page_token,
    encode_page_token,
    page_of,
    result_path,
)

TASK = "6f1c0f7e-8a4b-4c1e-9a53-0d2b7f3e9c11"
T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _store(task_id=TASK, result_dir="reports/2026", content=b"{}", content_type=""):
    return check_store_request(task_id, result_dir, content, content_type, max_bytes=16)


def test_a_result_lives_at_result_dir_slash_task_id_json():
    assert result_path("reports/2026", TASK) == f"reports/2026/{TASK}.json"
    assert _store(result_dir="reports//2026/").path == f"reports/2026/{TASK}.json"


def test_task_id_is_canonicalised_so_one_task_has_one_file():
    assert _store(task_id=TASK.upper()).task_id == TASK


def test_content_type_defaults_to_application_json():
    assert _store().content_type == DEFAULT_CONTENT_TYPE == "application/json"
    assert _store(content_type="text/plain; charset=utf-8").content_type == "text/plain; charset=utf-8"


@pytest.mark.parametrize("task_id", ["", "42", "not-a-uuid", "../" + TASK])
def test_a_task_id_that_is_not_a_uuid_is_invalid_argument_naming_task_id(task_id):
    with pytest.raises(InvalidArgument) as e:
        _store(task_id=task_id)
    assert e.value.field == "task_id"
    assert "task_id" in e.value.message


@pytest.mark.parametrize("result_dir", ["", "/etc", "../up", "a/../../b", "a b", "a\\b", "x" * 300, ".hidden"])
def test_an_unsafe_result_dir_is_invalid_argument_naming_result_dir(result_dir):
    with pytest.raises(InvalidArgument) as e:
        _store(result_dir=result_dir)
    assert e.value.field == "result_dir"


@pytest.mark.parametrize("content_type", ["json", "text/plain\r\nX-Evil: 1", "a/b c", "é/x", "a/" + "b" * 300])
def test_a_content_type_that_is_no_media_type_is_invalid_argument(content_type):
    with pytest.raises(InvalidArgument) as e:
        _store(content_type=content_type)
    assert e.value.field == "content_type"


def test_content_up_to_the_limit_is_accepted_and_above_it_is_resource_exhausted_naming_the_limit():
    assert len(_store(content=b"x" * 16).content) == 16
    with pytest.raises(ResourceExhausted) as e:
        _store(content=b"x" * 17)
    assert "17 bytes" in e.value.message
    assert "16 bytes" in e.value.message
    assert "max_result_bytes" in e.value.message


def test_page_size_defaults_to_100_and_is_capped_at_1000():
    assert check_list_query("", 0, "").page_size == DEFAULT_PAGE_SIZE == 100
    assert check_list_query("", 5, "").page_size == 5
    assert check_list_query("", 10_000, "").page_size == MAX_PAGE_SIZE == 1000
    with pytest.raises(InvalidArgument) as e:
        check_list_query("", -1, "")
    assert e.value.field == "page_size"


def test_list_filter_is_validated_and_normalised_like_a_stored_result_dir():
    assert check_list_query("reports/2026/", 0, "").result_dir == "reports/2026"
    with pytest.raises(InvalidArgument):
        check_list_query("../etc", 0, "")


def test_a_page_token_round_trips_the_last_key_and_is_opaque():
    key = ResultKey("reports", T0, TASK)
    token = encode_page_token(key, "reports")
    assert TASK not in token and "reports" not in token
    assert decode_page_token(token, "reports") == key
    assert check_list_query("reports", 10, token).after == key


def _forge(payload) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


@pytest.mark.parametrize(
    "token",
    [
        "!!!",
        "bm90IGpzb24",  # "not json"
        _forge({"a": 1}),
        _forge([2, "", "reports", 0, TASK]),  # unknown version
        _forge([1, "", "reports", "0", TASK]),
        _forge([1, "", "reports", -1, TASK]),
        _forge([1, "", "../etc", 0, TASK]),
        _forge([1, "", "reports", 0, "not-a-uuid"]),
        _forge([1, "", "reports", 10**30, TASK]),
        _forge([1, "", "reports", True, TASK]),
    ],
)
def test_a_malformed_page_token_is_invalid_argument(token):
    with pytest.raises(InvalidArgument) as e:
        check_list_query("", 10, token)
    assert e.value.field == "page_token"


def test_a_page_token_of_another_listing_is_invalid_argument():
    token = encode_page_token(ResultKey("a", T0, TASK), "a")
    with pytest.raises(InvalidArgument) as e:
        decode_page_token(token, "b")
    assert "'a'" in e.value.message


def _result(i: int, result_dir: str = "d") -> StoredResult:
    task_id = str(uuid.UUID(int=i))
    return StoredResult(
        task_id=task_id,
        result_dir=result_dir,
        path=result_path(result_dir, task_id),
        size_bytes=i,
        sha256="0" * 64,
        content_type=DEFAULT_CONTENT_TYPE,
        stored_at=T0 + timedelta(microseconds=i),
    )


def test_a_page_has_a_next_token_only_when_more_results_follow():
    rows = [_result(i) for i in range(4)]
    query = check_list_query("d", 3, "")
    page = page_of(rows, query)
    assert page.results == tuple(rows[:3])
    assert decode_page_token(page.next_page_token, "d") == rows[2].key
    last = page_of(rows[:3], query)
    assert last.results == tuple(rows[:3])
    assert last.next_page_token == ""
    assert page_of([], query).next_page_token == ""


def test_listing_order_is_directory_then_oldest_then_task_id():
    a_late, a_early, b = _result(5, "a"), _result(1, "a"), _result(0, "b")
    same_time = replace(a_early, task_id=str(uuid.UUID(int=0)))
    assert sorted([b, a_late, a_early, same_time], key=lambda r: r.key) == [same_time, a_early, a_late, b]
