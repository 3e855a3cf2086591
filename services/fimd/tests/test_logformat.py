import pytest

from services.fimd.logformat import PLACEHOLDERS, TemplateError, compile_template


def test_renders_placeholders_and_literal_braces() -> None:
    template = compile_template("{{x}} {event} {ftype} '{dir}{sep}{file}' ({pod}:{node})")
    values = dict.fromkeys(PLACEHOLDERS, "?") | {
        "event": "MODIFY",
        "ftype": "file",
        "dir": "/var/log",
        "sep": "/",
        "file": "a.log",
        "pod": "web-0",
        "node": "n1",
    }
    assert template.render(values) == "{x} MODIFY file '/var/log/a.log' (web-0:n1)"
    assert template.names == {"event", "ftype", "dir", "sep", "file", "pod", "node"}


def test_plain_text_is_a_template_without_placeholders() -> None:
    assert compile_template("static").render({}) == "static"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{nope}", "unknown placeholder {nope} at offset 0; known: {time}"),
        ("{path.__class__}", "unknown placeholder {path.__class__}"),
        ("{path!r}", "unknown placeholder {path!r}"),
        ("{path:>10}", "unknown placeholder {path:>10}"),
        ("{}", "unknown placeholder {}"),
        ("a {path", "unclosed '{' at offset 2"),
        ("a } b", "single '}' at offset 2"),
        ("{path}\n{event}", "'\\n' at offset 6: one event is one line"),
        ("{path}\r", "'\\r' at offset 6"),
    ],
)
def test_rejects_invalid_templates_with_a_clear_message(text: str, message: str) -> None:
    with pytest.raises(TemplateError) as err:
        compile_template(text)
    assert message in str(err.value)


def test_tab_is_allowed() -> None:
    assert compile_template("{event}\t{path}").names == {"event", "path"}
