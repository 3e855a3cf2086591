"""WatchConfig JSON contract: round trips and clear errors for bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest

from libs.fimnotify_api.events import EventName
from libs.fimnotify_api.config import ConfigError, SubjectConfig, WatchConfig, dumps, loads


def _doc(**subject: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"paths": ["/var/log"], "events": ["modify"]}
    base.update(subject)
    return {"watch_id": "w1", "pid": 42, "queue_name": "/fimk8s.w1", "subjects": [base]}


def test_round_trip_keeps_every_field() -> None:
    config = WatchConfig(
        watch_id="ns/name/pod/ctr",
        pid=1234,
        queue_name="/fimk8s.abc",
        subjects=(
            SubjectConfig(
                paths=("/var/log", "/etc/app.conf"),
                events=(EventName.OPEN, EventName.CLOSE, EventName.ALL),
                ignore=(".git", "*.swp"),
                only_dir=True,
                recursive=True,
                max_depth=3,
                follow_move=True,
                tags={"team": "payments"},
            ),
            SubjectConfig(paths=("/srv",), events=(EventName.CREATE,)),
        ),
        proc_root="/host/proc",
        buffer_records=10,
    )
    assert loads(dumps(config)) == config
    assert json.loads(dumps(config))["subjects"][0]["events"] == ["open", "close", "all"]


def test_defaults_apply() -> None:
    config = loads(json.dumps(_doc()))
    subject = config.subjects[0]
    assert (subject.recursive, subject.max_depth, subject.only_dir, subject.follow_move) == (
        False,
        0,
        False,
        False,
    )
    assert subject.tags == {}
    assert config.proc_root == "/proc"


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (_doc(events=["opn"]), "unknown event name 'opn'"),
        (_doc(events=[]), "at least one event name"),
        (_doc(paths=["var/log"]), "not an absolute path"),
        (_doc(paths="/var/log"), "expected a list of strings"),
        (_doc(paths=[]), "at least one path"),
        (_doc(max_depth=-1), "max_depth"),
        (_doc(max_depth=True), "max_depth"),
        (_doc(ignore=["a/b"]), "one path component"),
        (_doc(tags={"a": 1}), "tags"),
        (_doc(only_dir="yes"), "subjects.0.only_dir: expected bool"),
        (_doc(follow_mvoe=True), "unknown keys ['follow_mvoe']"),
        ({**_doc(), "pid": "42"}, "pid: expected int"),
        ({**_doc(), "pid": 0}, "positive host PID"),
        ({**_doc(), "queue_name": "fimk8s"}, "POSIX message queue name"),
        ({**_doc(), "subjects": []}, "at least one subject"),
        ({**_doc(), "extra": 1}, "unknown keys"),
        ({k: v for k, v in _doc().items() if k != "pid"}, "missing required key 'pid'"),
    ],
)
def test_bad_config_is_a_clear_error(doc: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        loads(json.dumps(doc))
    assert expected in str(info.value)


@pytest.mark.parametrize("text", ["", "{", "[]", b"\xff"])
def test_not_a_json_object(text: str | bytes) -> None:
    with pytest.raises(ConfigError):
        loads(text)
