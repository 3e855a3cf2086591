"""LabelSelector matching (every operator, Kubernetes semantics) and validation."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from libs.k8s.errors import ModelError
from libs.k8s.selector import LabelSelector, LabelSelectorRequirement, SelectorOperator

IN, NOT_IN = SelectorOperator.IN, SelectorOperator.NOT_IN
EXISTS, DOES_NOT_EXIST = SelectorOperator.EXISTS, SelectorOperator.DOES_NOT_EXIST

POD = {"app": "myapp", "tier": "web", "app.kubernetes.io/part-of": "shop", "empty": ""}


def requirement(key: str, operator: SelectorOperator, *values: str) -> LabelSelectorRequirement:
    return LabelSelectorRequirement(key=key, operator=operator, values=values)


@pytest.mark.parametrize(
    ("req", "labels", "expected"),
    [
        (requirement("tier", IN, "web", "api"), POD, True),
        (requirement("tier", IN, "api"), POD, False),
        (requirement("zone", IN, "a"), POD, False),
        (requirement("empty", IN, ""), POD, True),
        (requirement("tier", NOT_IN, "db"), POD, True),
        (requirement("tier", NOT_IN, "db", "web"), POD, False),
        (requirement("zone", NOT_IN, "a"), POD, True),
        (requirement("zone", NOT_IN, "a"), {}, True),
        (requirement("app", EXISTS), POD, True),
        (requirement("empty", EXISTS), POD, True),
        (requirement("zone", EXISTS), POD, False),
        (requirement("zone", DOES_NOT_EXIST), POD, True),
        (requirement("app", DOES_NOT_EXIST), POD, False),
        (requirement("empty", DOES_NOT_EXIST), POD, False),
        (requirement("app.kubernetes.io/part-of", IN, "shop"), POD, True),
    ],
)
def test_requirement_operators(
    req: LabelSelectorRequirement, labels: Mapping[str, str], expected: bool
) -> None:
    assert req.matches(labels) is expected


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        (LabelSelector(), POD, True),
        (LabelSelector(), {}, True),
        (LabelSelector(match_labels={"app": "myapp"}), POD, True),
        (LabelSelector(match_labels={"app": "myapp", "tier": "web"}), POD, True),
        (LabelSelector(match_labels={"app": "myapp", "tier": "db"}), POD, False),
        (LabelSelector(match_labels={"app": "other"}), POD, False),
        (LabelSelector(match_labels={"zone": ""}), POD, False),
        (LabelSelector(match_labels={"empty": ""}), POD, True),
        (LabelSelector(match_labels={"app": "myapp"}), {}, False),
        (
            LabelSelector(
                match_labels={"app": "myapp"},
                match_expressions=(
                    requirement("tier", IN, "web"),
                    requirement("zone", NOT_IN, "a"),
                ),
            ),
            POD,
            True,
        ),
        (
            LabelSelector(
                match_labels={"app": "myapp"},
                match_expressions=(
                    requirement("tier", IN, "web"),
                    requirement("app", DOES_NOT_EXIST),
                ),
            ),
            POD,
            False,
        ),
        (
            LabelSelector(
                match_labels={"app": "other"}, match_expressions=(requirement("tier", EXISTS),)
            ),
            POD,
            False,
        ),
        (LabelSelector(match_expressions=(requirement("zone", DOES_NOT_EXIST),)), {}, True),
    ],
)
def test_selector_requires_all_labels_and_expressions(
    selector: LabelSelector, labels: Mapping[str, str], expected: bool
) -> None:
    assert selector.matches(labels) is expected


@pytest.mark.parametrize(
    ("key", "operator", "values", "message"),
    [
        ("tier", IN, (), "values: must be non-empty for operator In"),
        ("tier", NOT_IN, (), "values: must be non-empty for operator NotIn"),
        ("tier", EXISTS, ("web",), "values: must be empty for operator Exists"),
        ("tier", DOES_NOT_EXIST, ("",), "values: must be empty for operator DoesNotExist"),
        ("", EXISTS, (), "key: '' has an empty name part"),
        ("bad key", EXISTS, (), "key: 'bad key' is not a valid qualified name"),
        ("a/b/c", EXISTS, (), "key: 'a/b/c' has more than one '/'"),
        ("tier", IN, ("web", "bad value"), "values[1]: 'bad value' is not a valid label value"),
        ("tier", NOT_IN, ("x" * 64,), "values[0]: must be no more than 63 characters"),
    ],
)
def test_requirement_validation(
    key: str, operator: SelectorOperator, values: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ModelError) as caught:
        LabelSelectorRequirement(key=key, operator=operator, values=values)
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ({"-app": "x"}, "matchLabels[-app]: '-app' is not a valid qualified name"),
        ({"app": "a b"}, "matchLabels[app]: 'a b' is not a valid label value"),
        ({"Example.com/app": "x"}, "matchLabels[Example.com/app]: 'Example.com' is not a valid"),
        ({"app": "v" * 64}, "matchLabels[app]: must be no more than 63 characters"),
    ],
)
def test_match_labels_validation(labels: dict[str, str], message: str) -> None:
    with pytest.raises(ModelError) as caught:
        LabelSelector(match_labels=labels)
    assert str(caught.value).startswith(message)


def test_match_labels_are_a_read_only_copy() -> None:
    source = {"app": "myapp"}
    selector = LabelSelector(match_labels=source)
    source["app"] = "changed"
    assert selector.match_labels == {"app": "myapp"}
    with pytest.raises(TypeError):
        selector.match_labels["app"] = "x"  # type: ignore[index]


def test_equal_selectors_hash_equal() -> None:
    first = LabelSelector(match_labels={"a": "1", "b": "2"})
    second = LabelSelector(match_labels={"b": "2", "a": "1"})
    assert first == second
    assert hash(first) == hash(second)
    assert first != LabelSelector(match_labels={"a": "1"})
