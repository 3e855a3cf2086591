import json

from services.fimd.lines import EventRenderer, Identity, format_time, op_line
from services.fimd.logformat import compile_template

IN_MODIFY, IN_CREATE, IN_ISDIR = 0x2, 0x100, 0x40000000
T = 1_700_000_000_123_456_789  # 2023-11-14T22:13:20.123456789Z
IDENTITY = Identity("node-1", "shop", "web-0", "app", "shop/myapp-logs")


def test_time_is_rfc3339_utc_with_microseconds() -> None:
    assert format_time(T) == "2023-11-14T22:13:20.123456Z"
    assert format_time(0) == "1970-01-01T00:00:00.000000Z"


def test_json_event_line_has_every_contract_field() -> None:
    renderer = EventRenderer(IDENTITY, [{}, {"team": "payments"}], None)
    (line,) = renderer.render(T, IN_MODIFY, 1, b"/var/log/app.log")
    assert line.endswith("\n")
    assert line.count("\n") == 1
    assert json.loads(line) == {
        "kind": "event",
        "time": "2023-11-14T22:13:20.123456Z",
        "node": "node-1",
        "namespace": "shop",
        "pod": "web-0",
        "container": "app",
        "watcher": "shop/myapp-logs",
        "event": "MODIFY",
        "path": "/var/log/app.log",
        "isDir": False,
        "tags": {"team": "payments"},
    }


def test_directory_event_and_hostile_file_names() -> None:
    renderer = EventRenderer(IDENTITY, [{}], None)
    (line,) = renderer.render(T, IN_CREATE | IN_ISDIR, 0, b'/srv/a"\n\xff')
    parsed = json.loads(line)
    assert parsed["isDir"] is True
    assert parsed["event"] == "CREATE"
    assert parsed["path"] == '/srv/a"\n\\xff'


def test_template_line_with_compat_names_escapes_control_characters() -> None:
    template = compile_template("{event} {ftype} '{dir}{sep}{file}' {watcher} {tags} {isDir}")
    renderer = EventRenderer(IDENTITY, [{"b": "2", "a": "1"}], template)
    assert renderer.render(T, IN_MODIFY, 0, b"/etc/passwd") == [
        'MODIFY file \'/etc/passwd\' shop/myapp-logs {"a":"1","b":"2"} false\n'
    ]
    (forged,) = renderer.render(T, IN_CREATE, 0, b'/x\n{"kind":"op"}')
    assert forged.count("\n") == 1
    assert "/x\\x0a" in forged
    (root,) = EventRenderer(IDENTITY, [{}], compile_template("[{dir}][{sep}][{file}]")).render(
        T, IN_CREATE, 0, b"/top"
    )
    assert root == "[/][][top]\n"


def test_op_line_is_distinguishable() -> None:
    parsed = json.loads(op_line("node-1", "watch_added", "info", pod="web-0"))
    assert parsed["kind"] == "op"
    assert parsed["msg"] == "watch_added"
    assert parsed["level"] == "info"
    assert parsed["pod"] == "web-0"
