"""Engine command line and control messages: round trips, and every malformed input named."""

from __future__ import annotations

import json
from typing import Any

import pytest

from libs.fimnotify_api import control
from libs.fimnotify_api.control import (
    DEFAULT_BUFFER_BYTES,
    DEFAULT_MAX_DIRS,
    MAX_CONTROL_BYTES,
    MAX_SUBJECTS,
    MAX_WATCH,
    AddWatch,
    ControlError,
    EngineConfig,
    RemoveWatch,
)
from libs.fimnotify_api.events import EventName
from libs.fimnotify_api.identity import ProcessIdentity
from libs.fimnotify_api.subject import SubjectConfig
from libs.fimnotify_api.wire import ENGINE, ExitStatus

# --- EngineConfig ----------------------------------------------------------------------


def test_engine_config_argv_parse_round_trip() -> None:
    config = EngineConfig("/fimk8s.abc.e3", "/host/proc", 17, 65536, "e3")
    assert EngineConfig.parse(config.argv()) == config


def test_engine_config_defaults() -> None:
    config = EngineConfig.parse(["--queue", "/fimk8s.x"])
    assert config == EngineConfig("/fimk8s.x")
    assert (config.proc_root, config.max_dirs, config.buffer_bytes, config.name) == (
        "/proc",
        DEFAULT_MAX_DIRS,
        DEFAULT_BUFFER_BYTES,
        "engine",
    )
    assert EngineConfig.parse(EngineConfig("/fimk8s.x").argv()) == config


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"queue_name": "fimk8s.x"}, "queue"),
        ({"queue_name": "/"}, "queue"),
        ({"queue_name": "/a/b"}, "queue"),
        ({"queue_name": "/" + "q" * 251}, "queue"),
        ({"queue_name": "/fimk8s x"}, "queue"),
        ({"proc_root": "proc"}, "proc-root"),
        ({"max_dirs": 0}, "max-dirs"),
        ({"max_dirs": -1}, "max-dirs"),
        ({"buffer_bytes": 65535}, "buffer-bytes"),
    ],
)
def test_bad_engine_config_is_refused(fields: dict[str, Any], match: str) -> None:
    values: dict[str, Any] = {"queue_name": "/fimk8s.x", **fields}
    with pytest.raises(ControlError, match=match):
        EngineConfig(**values)
    argv = EngineConfig("/fimk8s.x").argv()
    for flag, value in (
        ("--queue", values["queue_name"]),
        ("--proc-root", values.get("proc_root", "/proc")),
        ("--max-dirs", values.get("max_dirs", 1)),
        ("--buffer-bytes", values.get("buffer_bytes", 65536)),
    ):
        argv[argv.index(flag) + 1] = str(value)
    with pytest.raises(ControlError, match=match):
        EngineConfig.parse(argv)


def test_engine_config_limits_are_inclusive() -> None:
    EngineConfig("/" + "q" * 250, max_dirs=1, buffer_bytes=65536)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--queue"],
        ["--queue", "/q", "--max-dirs", "many"],
        ["--queue", "/q", "--buffer-bytes", "1.5"],
        ["--queue", "/q", "--unknown"],
        ["/q"],
    ],
)
def test_unparsable_flags_exit_with_the_usage_status(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        EngineConfig.parse(argv)
    assert info.value.code == ExitStatus.USAGE
    assert "usage: fimnotify" in capsys.readouterr().err


# --- control messages --------------------------------------------------------------------

FULL = SubjectConfig(
    paths=("/etc", "/var/lib/\udcff\udcfe"),  # a non-UTF-8 name (surrogateescape)
    events=(EventName.CREATE, EventName.CLOSE),
    ignore=("*.swp", ".git"),
    only_dir=True,
    recursive=True,
    max_depth=3,
    follow_move=True,
)


@pytest.mark.parametrize(
    "message",
    [
        AddWatch(0, 1, "", (SubjectConfig(paths=("/",), events=(EventName.ALL,)),)),
        AddWatch(MAX_WATCH, 2**31 - 1, "ns/pod/ctr: é", (FULL,) * MAX_SUBJECTS),
        AddWatch(7, 42, "x" * 1024, (FULL, SubjectConfig(paths=("/a",), events=("open",)))),
        AddWatch(
            8,
            43,
            "identified",
            (FULL,),
            ProcessIdentity(2**63 - 1, tuple(f"{i:02d}" + "x" * 254 for i in range(16))),
        ),
        RemoveWatch(0),
        RemoveWatch(MAX_WATCH),
    ],
    ids=["minimal", "maximal", "two-subjects", "identity", "remove-0", "remove-max"],
)
def test_encode_decode_round_trip(message: control.Control) -> None:
    line = control.encode(message)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert line.isascii()
    assert control.decode(line) == message
    assert control.decode(line.rstrip(b"\n")) == message


def test_tags_stay_with_fimd() -> None:
    tagged = SubjectConfig(paths=("/a",), events=("all",), tags={"team": "a"})
    line = control.encode(AddWatch(1, 2, "l", (tagged,)))
    assert b"team" not in line
    decoded = control.decode(line)
    assert isinstance(decoded, AddWatch)
    assert decoded.subjects[0].tags == {}


def test_the_engine_watch_number_is_not_a_watch() -> None:
    assert MAX_WATCH == ENGINE - 1
    with pytest.raises(ControlError, match="watch"):
        control.decode(json.dumps({"op": "remove", "watch": ENGINE}).encode())


def add(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "op": "add",
        "watch": 1,
        "pid": 42,
        "label": "l",
        "subjects": [{"paths": ["/data"], "events": ["all"]}],
    }
    doc.update(changes)
    return doc


def subj(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"paths": ["/data"], "events": ["all"]}
    doc.update(changes)
    return add(subjects=[{"paths": ["/ok"], "events": ["all"]}, doc])


BAD_DOCS: list[tuple[Any, str]] = [
    ([], "not a JSON object"),
    ("add", "not a JSON object"),
    (None, "not a JSON object"),
    ({"op": "remove"}, "^watch: None"),
    ({"op": "remove", "watch": "1"}, "^watch: '1'"),
    ({"op": "remove", "watch": -1}, "^watch: -1"),
    ({"op": "remove", "watch": 1.0}, "^watch: 1.0"),
    ({"op": "remove", "watch": True}, "^watch: True"),
    ({"op": "remove", "watch": MAX_WATCH + 1}, "^watch: "),
    ({"op": "stop", "watch": 1}, "^op: unknown operation 'stop'"),
    ({"watch": 1}, "^op: unknown operation None"),
    (add(pid=0), "^pid: 0"),
    (add(pid=2**31), "^pid: "),
    (add(pid="42"), "^pid: '42'"),
    (add(pid=None), "^pid: None"),
    (add(label=5), "^label: expected str"),
    (add(label="x" * 1025), "^label: at most 1024"),
    (add(start_time=-1), "^start_time: -1"),
    (add(start_time="5"), "^start_time: '5'"),
    (add(start_time=2**63), "^start_time: "),
    (add(start_time=None), "^start_time: None"),
    (add(cgroup="abc"), "^cgroup: expected a list of strings"),
    (add(cgroup=["a", 1]), "^cgroup: expected a list of strings"),
    (add(cgroup=["a"] * 17), "^cgroup: at most 16"),
    (add(cgroup=[""]), "^cgroup: .*1..256"),
    (add(cgroup=["x" * 257]), "^cgroup: .*1..256"),
    (add(subjects=[]), "^subjects: expected a list of 1..32"),
    (add(subjects={"paths": ["/a"]}), "^subjects: expected a list"),
    (add(subjects=[{"paths": ["/a"], "events": ["all"]}] * 33), "^subjects: .*1..32"),
    (add(subjects=None), "^subjects: expected a list"),
    (add(subjects=["/a"]), r"^subjects\[0\]: expected an object"),
    (subj(tags={"a": "b"}), r"^subjects\[1\]: unknown keys \['tags'\]"),
    (subj(bogus=1, zz=2), r"^subjects\[1\]: unknown keys \['bogus', 'zz'\]"),
    (subj(paths="/a"), r"^subjects\[1\]\.paths: expected a list of strings"),
    (subj(paths=["/a", 5]), r"^subjects\[1\]\.paths: expected a list of strings"),
    (subj(paths=[]), r"^subjects\[1\]\.paths: must have at least 1"),
    (subj(paths=["data"]), r"^subjects\[1\]\.paths\[0\]: must be an absolute path"),
    (subj(paths=["/a", "/a/../b"]), r"^subjects\[1\]\.paths\[1\]: must be normalized"),
    (subj(paths=["/a/"]), r"^subjects\[1\]\.paths\[0\]: must be normalized"),
    (subj(paths=["/a\x00b"]), r"^subjects\[1\]\.paths\[0\]: must not contain NUL"),
    (subj(paths=["/\ud800"]), r"^subjects\[1\]\.paths\[0\]: has a lone surrogate"),
    (subj(events=[]), r"^subjects\[1\]\.events: must have at least 1"),
    (subj(events=["create", "nope"]), r"^subjects\[1\]\.events\[1\]: unknown event name"),
    (subj(events="all"), r"^subjects\[1\]\.events: expected a list of strings"),
    (subj(ignore=["a/b"]), r"^subjects\[1\]\.ignore\[0\]: must not contain '/'"),
    (subj(ignore=["*", "\udbff"]), r"^subjects\[1\]\.ignore\[1\]: has a lone surrogate"),
    (subj(ignore=[1]), r"^subjects\[1\]\.ignore: expected a list of strings"),
    (subj(only_dir=1), r"^subjects\[1\]\.only_dir: expected bool"),
    (subj(recursive="yes"), r"^subjects\[1\]\.recursive: expected bool"),
    (subj(follow_move=None), r"^subjects\[1\]\.follow_move: expected bool"),
    (subj(max_depth=True, recursive=True), r"^subjects\[1\]\.max_depth: expected int"),
    (subj(max_depth=1.5, recursive=True), r"^subjects\[1\]\.max_depth: expected int"),
    (subj(max_depth=129, recursive=True), r"^subjects\[1\]\.maxDepth: must be between"),
    (subj(max_depth=2), r"^subjects\[1\]\.maxDepth: requires recursive"),
]


@pytest.mark.parametrize(("doc", "match"), BAD_DOCS)
def test_malformed_control_lines_name_the_field(doc: Any, match: str) -> None:
    line = json.dumps(doc).encode() + b"\n"
    with pytest.raises(ControlError, match=match):
        control.decode(line)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        (b"", "not a JSON object"),
        (b"\n", "not a JSON object"),
        (b"{", "not a JSON object"),
        (b'{"op":"remove","watch":1}{}', "not a JSON object"),
        (b'{"op":"remove","watch":1,"op":"add"}', "^subjects: "),
        (b'{"op":"remove","watch":\xff}', "not a JSON object"),
        (b'{"op":"remove","label":"\xff","watch":1}', "not a JSON object"),
        (b"[" * 100_000 + b"]" * 100_000, "not a JSON object"),
        (b'{"label":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "not a JSON object"),
        (b'{"op":"remove","watch":1e400}', "^watch: inf"),
        (b'{"op":"remove","watch":NaN}', "^watch: nan"),
    ],
    ids=[
        "empty",
        "newline",
        "unclosed",
        "two-objects",
        "duplicate-key",
        "bad-utf8",
        "bad-utf8-string",
        "deep-array",
        "deep-value",
        "huge-float",
        "nan",
    ],
)
def test_malformed_lines(line: bytes, match: str) -> None:
    with pytest.raises(ControlError, match=match):
        control.decode(line)


def test_oversized_line_is_refused_before_parsing() -> None:
    line = b'{"op":"remove","watch":1,"label":"' + b"x" * MAX_CONTROL_BYTES + b'"}'
    with pytest.raises(ControlError, match=f"exceeds {MAX_CONTROL_BYTES}"):
        control.decode(line)


def test_a_line_at_the_limit_is_parsed() -> None:
    head = b'{"op":"remove","watch":3,"pad":"'
    line = head + b"x" * (MAX_CONTROL_BYTES - len(head) - 2) + b'"}'
    assert len(line) == MAX_CONTROL_BYTES
    assert control.decode(line) == RemoveWatch(3)


def test_encode_refuses_oversized_lines() -> None:
    many = SubjectConfig(paths=tuple(f"/{'p' * 4000}{i}" for i in range(64)), events=("all",))
    huge = AddWatch(1, 2, "", (many,) * MAX_SUBJECTS)  # 32 x 64 x 4 KiB > 8 MiB: still fits
    assert len(control.encode(huge)) <= MAX_CONTROL_BYTES
    with pytest.raises(ControlError, match="exceeds"):
        control.encode(AddWatch(1, 2, "x" * MAX_CONTROL_BYTES, (many,)))


def test_an_add_without_identity_checks_nothing() -> None:
    decoded = control.decode(json.dumps(add()).encode())
    assert isinstance(decoded, AddWatch)
    assert decoded.identity == ProcessIdentity()
    line = control.encode(AddWatch(1, 2, "l", decoded.subjects, ProcessIdentity(99, ("c",))))
    doc = json.loads(line)
    assert (doc["start_time"], doc["cgroup"]) == (99, ["c"])
