"""SPEC §3: an unsafe result_dir (absolute, '..', odd characters) is refused;
SPEC §2: service and entity names match ^[a-z][a-z0-9_-]{0,62}$."""

import pytest

from gridmesh.common.errors import InvalidArgument
from gridmesh.common.names import check_name, check_result_dir, check_uuid


@pytest.mark.parametrize(
    ("given", "normalised"),
    [("reports", "reports"), ("a/b/c", "a/b/c"), ("a//b/./c/", "a/b/c"), ("v1.2_x-y", "v1.2_x-y")],
)
def test_safe_relative_dirs_are_accepted(given, normalised):
    assert check_result_dir(given) == normalised


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("", "required"),
        ("/etc", "absolute"),
        ("a/../b", "'..'"),
        ("..", "'..'"),
        ("a b", "unsupported character"),
        ("a/$HOME", "unsupported character"),
        ("a\\b", "unsupported character"),
        (".hidden", "unsupported character"),
        ("x" * 256, "limit is 255"),
        ("./", "names no directory"),
    ],
)
def test_unsafe_dirs_are_refused(given, why):
    with pytest.raises(InvalidArgument, match=why):
        check_result_dir(given)


@pytest.mark.parametrize("name", ["a", "customer-service", "order_service2", "a" * 63])
def test_valid_names(name):
    assert check_name(name, "subscriber") == name


@pytest.mark.parametrize("name", ["", "A", "1abc", "a.b", "a" * 64, "-a", "a b"])
def test_invalid_names_are_refused(name):
    with pytest.raises(InvalidArgument, match="subscriber"):
        check_name(name, "subscriber")


def test_uuid_is_checked_and_normalised():
    assert check_uuid("7C9E6679-7425-40DE-944B-E07FC1F90AE7", "task_id") == "7c9e6679-7425-40de-944b-e07fc1f90ae7"
    with pytest.raises(InvalidArgument, match="not a UUID"):
        check_uuid("abc", "task_id")
