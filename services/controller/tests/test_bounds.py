"""Text from outside the controller is bounded wherever it ends up: logs, Events, status."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from libs.k8s.model import ObjectMeta
from services.controller.bounds import (
    MAX_EVENT_BYTES,
    MAX_LOGGED,
    clip,
    clip_bytes,
    describe,
    frames,
)
from services.controller.events import WARNING, EventRecorder
from services.controller.kube import ApiError, Kube
from services.controller.logs import JsonFormatter
from services.controller.metrics import Metrics


def test_clip_keeps_short_text_and_marks_long_text_with_its_length() -> None:
    assert clip("short", 10) == "short"
    assert clip("x" * 10, 10) == "x" * 10
    clipped = clip("x" * 100, 40)
    assert clipped == "x" * 9 + "... [truncated, 100 characters]"
    assert len(clipped) == 40
    assert clip("x" * 100, 5) == "xxxxx"  # no room for the marker: a plain cut


def test_clip_bytes_counts_utf8_and_never_splits_a_character() -> None:
    text = "\u00e9" * 1000  # two bytes each
    clipped = clip_bytes(text, 100)
    assert len(clipped.encode()) <= 100
    assert clipped.endswith("... [truncated, 2000 bytes]")
    assert set(clipped.removesuffix("... [truncated, 2000 bytes]")) == {"\u00e9"}
    assert clip_bytes("\u00e9" * 50, 100) == "\u00e9" * 50


class Unprintable(Exception):  # noqa: N818 - named for what it does
    def __str__(self) -> str:
        raise RuntimeError("no")


def test_describe_names_the_type_and_bounds_the_message() -> None:
    assert describe(KeyError("k")) == "KeyError: 'k'"
    assert describe(RuntimeError()) == "RuntimeError"
    assert describe(Unprintable()) == "Unprintable: <unprintable>"
    long = describe(ValueError("v" * 100_000))
    assert len(long) == MAX_LOGGED
    assert long.endswith(f"[truncated, {len('ValueError: ') + 100_000} characters]")


def test_frames_name_where_it_was_raised() -> None:
    def inner(data: str) -> None:
        raise ValueError(data)

    data = "/".join(["secret ", "tenant", "file"])
    try:
        inner(data)
    except ValueError as err:
        where = frames(err)
    assert "in inner" in where
    assert data not in where  # code locations only, never the message


class RecordingKube(Kube):
    def __init__(self, fail: ApiError | None = None) -> None:
        super().__init__(None)
        self.bodies: list[Any] = []
        self.fail = fail

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        self.bodies.append(kwargs["body"])
        return {}


META = ObjectMeta(name="logs", namespace="shop", uid="w1")


def test_event_message_is_bounded_in_bytes_with_a_marker() -> None:
    kube = RecordingKube()
    recorder = EventRecorder(kube, Metrics(), instance="test")
    message = "watch failed at /data/" + "\u00e9" * 5000
    recorder.emit(META, WARNING, "WatchesFailed", message)
    sent = kube.bodies[0]["message"]
    assert len(sent.encode()) <= MAX_EVENT_BYTES
    assert sent.startswith("watch failed at /data/\u00e9")
    assert sent.endswith(f"... [truncated, {len(message.encode())} bytes]")
    recorder.emit(META, WARNING, "WatchesFailed", "3 watch(es) failed on node n1")
    assert kube.bodies[1]["message"] == "3 watch(es) failed on node n1"


def test_event_failure_log_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    echoed = "Event is invalid: message: " + "m" * 100_000
    kube = RecordingKube(fail=ApiError(422, echoed))
    EventRecorder(kube, Metrics(), instance="test").emit(META, WARNING, "WatchesFailed", "x")
    [record] = [r for r in caplog.records if r.getMessage() == "event not recorded"]
    error = vars(record)["error"]
    assert len(error) == MAX_LOGGED
    assert error.startswith("ApiError: 422: Event is invalid")
    line = JsonFormatter().format(record)
    assert len(line) < 2 * MAX_LOGGED
    assert json.loads(line)["error"] == error


def test_log_line_fields_from_hostile_text_stay_one_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    logging.getLogger("services.controller.test").warning(
        "sync failed", extra={"error": describe(ValueError("a\nfake line\r\n" + "z" * 5000))}
    )
    line = JsonFormatter().format(caplog.records[-1])
    assert "\n" not in line
    assert len(line) < 2 * MAX_LOGGED
