"""Entry point of the `kubectl-fim` zipapp (and of `python3 -m plugins.kubectl_fim`)."""

import signal
import sys

# Checked before anything else is imported, in syntax every Python 3 parses: an older Python
# gets this message, not a SyntaxError from a module below.
if sys.version_info < (3, 11):  # noqa: UP036 (the zipapp runs on the user's python3)
    found = f"{sys.version_info.major}.{sys.version_info.minor}"
    sys.exit(f"kubectl-fim needs Python 3.11 or newer; python3 here is {found}")

from plugins.kubectl_fim.cli import main


def _terminated(signum: int, frame: object) -> None:
    # SIGTERM ends the plugin like Ctrl-C: the kubectl processes it started are stopped.
    raise KeyboardInterrupt


signal.signal(signal.SIGTERM, _terminated)
sys.exit(main(sys.argv[1:]))
