"""ModelError paths: how nested field names, indexes and map keys compose."""

from __future__ import annotations

import pytest

from libs.k8s.errors import ModelError, within


@pytest.mark.parametrize(
    ("segments", "path"),
    [
        ([], ""),
        (["spec"], "spec"),
        (["spec", "subjects", 1, "paths", 0], "spec.subjects[1].paths[0]"),
        (["spec", "subjects", 0, "tags", "[team]"], "spec.subjects[0].tags[team]"),
        ([2, 3], "[2][3]"),
    ],
)
def test_within_composes_json_paths(segments: list[str | int], path: str) -> None:
    error = ModelError("is wrong")
    for segment in reversed(segments):
        error = error.within(segment)
    assert error.path == path
    assert error.reason == "is wrong"
    assert str(error) == (f"{path}: is wrong" if path else "is wrong")


def test_context_manager_prefixes_and_keeps_the_type() -> None:
    class SubError(ModelError):
        pass

    with pytest.raises(SubError) as caught, within("spec"), within("subjects"), within(4):
        raise SubError("must be an array", "paths")
    assert str(caught.value) == "spec.subjects[4].paths: must be an array"


def test_context_manager_leaves_other_exceptions_alone() -> None:
    with pytest.raises(KeyError), within("spec"):
        raise KeyError("x")
