"""`kubectl fim baseline NAME`: the stored baselines of one FimWatcher on every node, from
each fimd's `GET /baselines?watcher=<uid>` (docs/architecture.md, *Ports and metrics*),
read through the API server's pod proxy. Pure: the rows from the nodes' answers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from libs.fimlines import neutralise
from plugins.kubectl_fim.status import size

HEADERS = (
    "NODE",
    "POD",
    "CONTAINER",
    "SUBJECT",
    "ENTRIES",
    "FILES",
    "DIRS",
    "OTHER",
    "BYTES",
    "HASHED",
    "SKIPPED",
    "UPDATED",
    "TRUNCATED",
)
#: Longest subject cell (paths joined with commas) shown in the table.
MAX_SUBJECT_CELL = 60


@dataclass(frozen=True)
class NodeAnswer:
    """One fimd's answer: its document, or why there is none."""

    node: str
    pod: str
    document: Mapping[str, Any] | None = None
    error: str = ""


def parse(node: str, pod: str, text: str) -> NodeAnswer:
    try:
        doc = json.loads(text)
    except ValueError as err:
        return NodeAnswer(node, pod, error=f"not JSON: {err}")
    if not isinstance(doc, dict) or not isinstance(doc.get("baselines"), list):
        return NodeAnswer(node, pod, error="not a baseline summary")
    return NodeAnswer(node, pod, doc)


def _int(row: Mapping[str, Any], name: str) -> int:
    value = row.get(name, 0)
    return value if isinstance(value, int) else 0


def _rows_of(answer: NodeAnswer) -> list[Mapping[str, Any]]:
    assert answer.document is not None
    return [r for r in answer.document["baselines"] if isinstance(r, dict)]


def _subject(row: Mapping[str, Any]) -> str:
    paths = row.get("paths")
    if isinstance(paths, list) and paths:
        text = ",".join(str(p) for p in paths) + ("+" if row.get("pathsOmitted") else "")
    else:
        text = f"key {str(row.get('subject', ''))[:12]}"
    text = neutralise(text)
    return text if len(text) <= MAX_SUBJECT_CELL else text[: MAX_SUBJECT_CELL - 3] + "..."


def table_rows(answers: Sequence[NodeAnswer]) -> list[tuple[str, ...]]:
    rows = []
    for answer in answers:
        if answer.document is None:
            continue
        for row in _rows_of(answer):
            pod = row.get("pod") or f"(gone) {row.get('podUID', '')}"
            rows.append(
                (
                    neutralise(answer.node),
                    neutralise(str(pod)),
                    neutralise(str(row.get("container", ""))),
                    _subject(row),
                    str(_int(row, "entries")),
                    str(_int(row, "files")),
                    str(_int(row, "dirs")),
                    str(_int(row, "symlinks") + _int(row, "other")),
                    size(_int(row, "bytes")),
                    str(_int(row, "hashed")),
                    str(_int(row, "hashSkipped")),
                    neutralise(str(row.get("updated", "")))[:19] + "Z",
                    "yes" if row.get("truncated") else "no",
                )
            )
    return sorted(rows)


def notes(answers: Sequence[NodeAnswer]) -> list[str]:
    """What the table does not show: nodes that did not answer, answers that were clipped."""
    out = []
    for answer in sorted(answers, key=lambda a: (a.node, a.pod)):
        where = f"{neutralise(answer.node)} ({neutralise(answer.pod)})"
        if answer.document is None:
            out.append(f"{where}: no answer: {neutralise(answer.error)}")
        elif answer.document.get("clipped"):
            shown = _int(answer.document, "shown")
            out.append(f"{where}: clipped: {shown} baselines shown, more are stored")
    return out


def document(watcher: str, uid: str, answers: Sequence[NodeAnswer]) -> dict[str, Any]:
    """The -o json form: every row with its node, and each node's outcome."""
    rows = [
        {"node": a.node, **r}
        for a in sorted(answers, key=lambda a: (a.node, a.pod))
        if a.document is not None
        for r in _rows_of(a)
    ]
    nodes = [
        {"node": a.node, "pod": a.pod}
        | (
            {"error": a.error}
            if a.document is None
            else {"clipped": bool(a.document.get("clipped"))}
        )
        for a in sorted(answers, key=lambda a: (a.node, a.pod))
    ]
    return {"watcher": watcher, "uid": uid, "baselines": rows, "nodes": nodes}
