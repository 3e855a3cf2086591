"""metav1.LabelSelector: the value class, its validation and matching against pod labels.

Semantics follow k8s.io/apimachinery `LabelSelectorAsSelector` exactly: `matchLabels` and
every `matchExpressions` requirement must all hold; an empty selector matches every pod;
`NotIn` and `DoesNotExist` match pods that lack the key. Validation follows
`ValidateLabelSelector`: keys are qualified names, values are label values, `In`/`NotIn`
need at least one value and `Exists`/`DoesNotExist` take none. Field paths in errors use the
JSON names (`matchExpressions[0].values`).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from libs.k8s.errors import ModelError, within
from libs.k8s.frozen import frozen_map
from libs.k8s.names import check_label_value, check_qualified_name


class SelectorOperator(enum.StrEnum):
    """The operator of one `matchExpressions` requirement."""

    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


_VALUED_OPERATORS = frozenset({SelectorOperator.IN, SelectorOperator.NOT_IN})


def check_labels(labels: Mapping[str, str]) -> None:
    """Validates a label map (`matchLabels`, `metadata.labels`): path `[key]` on error."""
    for key, value in labels.items():
        with within(f"[{key}]"):
            check_qualified_name(key)
            check_label_value(value)


def _check_values(values: tuple[str, ...]) -> None:
    for index, value in enumerate(values):
        with within("values"), within(index):
            check_label_value(value)


@attrs.frozen(kw_only=True)
class LabelSelectorRequirement:
    """One `matchExpressions` entry: `key <operator> values`."""

    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        with within("key"):
            check_qualified_name(self.key)
        _check_values(self.values)
        if self.operator in _VALUED_OPERATORS and not self.values:
            raise ModelError(f"must be non-empty for operator {self.operator}", "values")
        if self.operator not in _VALUED_OPERATORS and self.values:
            raise ModelError(f"must be empty for operator {self.operator}", "values")

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a pod with `labels` satisfies this requirement."""
        match self.operator:
            case SelectorOperator.IN:
                return self.key in labels and labels[self.key] in self.values
            case SelectorOperator.NOT_IN:
                return self.key not in labels or labels[self.key] not in self.values
            case SelectorOperator.EXISTS:
                return self.key in labels
            case SelectorOperator.DOES_NOT_EXIST:
                return self.key not in labels


@attrs.frozen(kw_only=True)
class LabelSelector:
    """A standard label selector over pods; `LabelSelector()` matches every pod."""

    match_labels: Mapping[str, str] = attrs.field(factory=dict, converter=frozen_map, hash=False)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    def __attrs_post_init__(self) -> None:
        with within("matchLabels"):
            check_labels(self.match_labels)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a pod with `labels` is selected: all labels and all expressions hold."""
        return all(labels.get(key) == value for key, value in self.match_labels.items()) and all(
            requirement.matches(labels) for requirement in self.match_expressions
        )
