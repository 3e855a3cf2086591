"""Arguments of `kubectl fim`: errors exit 2 with the reason, before kubectl is run."""

from __future__ import annotations

import io

import pytest

from plugins.kubectl_fim import cli


def run(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    try:
        code = cli.main(list(argv), io.StringIO(), err)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, err.getvalue()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "the following arguments are required: COMMAND"),
        (("rescan",), "invalid choice: 'rescan'"),
        (("scan",), "the following arguments are required: NAME"),
        (("scan", "w", "--timeout", "soon"), "'soon' is not a duration"),
        (("baseline", "w", "-o", "yaml"), "invalid choice: 'yaml'"),
        (("events", "--since", "5 minutes"), "'5 minutes' is not a duration"),
        (("events", "-o", "yaml"), "invalid choice: 'yaml'"),
        (("events", "--ops", "few"), "invalid choice: 'few'"),
        (("events", "--merge-window", "-1"), "expected 0 to 60 seconds"),
        (("events", "--event", "write"), "unknown event name 'write'"),
        (("events", "--watcher", "a/"), "expected NAME or NAMESPACE/NAME"),
        (("status", "--bogus"), "unrecognized arguments: --bogus"),
    ],
)
def test_argument_errors(
    argv: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # --kubectl names a file that does not exist: reaching kubectl would fail differently.
    code, err = run(*argv, "--kubectl=/nonexistent/kubectl") if argv else run()
    assert code == 2
    assert message in err + capsys.readouterr().err


def test_a_missing_kubectl_is_a_clear_failure() -> None:
    code, err = run("status", "--kubectl=/nonexistent/kubectl")
    assert code == 1
    assert err.startswith("kubectl fim: kubectl get fimwatchers.fim-k8s.io")
    assert "No such file or directory" in err


def test_durations() -> None:
    args = cli.parser().parse_args(["events", "--since", "1h30m"])
    assert args.since == "1h30m"
    assert cli.parser().parse_args(["events", "--since", "90s", "-f"]).follow


def test_colour_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    pipe = io.StringIO()
    assert cli.use_colour("always", pipe)
    assert not cli.use_colour("never", pipe)
    assert not cli.use_colour("auto", pipe)  # not a terminal

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert cli.use_colour("auto", Tty())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not cli.use_colour("auto", Tty())


def test_kubectl_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIM_KUBECTL", "/opt/kubectl")
    args = cli.parser().parse_args(["status"])
    assert cli.kubectl_of(args).argv("get") == ["/opt/kubectl", "get"]
    assert cli.option(args, "fim_namespace") == "fim-system"
    monkeypatch.delenv("FIM_KUBECTL")
    args = cli.parser().parse_args(["--request-timeout=3s", "status", "--user=u"])
    assert cli.kubectl_of(args).argv("get") == [
        "kubectl",
        "--user=u",
        "--request-timeout=3s",
        "get",
    ]
