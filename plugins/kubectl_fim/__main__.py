"""Entry point of the `kubectl-fim` zipapp (and of `python3 -m plugins.kubectl_fim`)."""

import sys

# Checked before anything else is imported, in syntax every Python 3 parses: an older Python
# gets this message, not a SyntaxError from a module below.
if sys.version_info < (3, 11):  # noqa: UP036 (the zipapp runs on the user's python3)
    found = f"{sys.version_info.major}.{sys.version_info.minor}"
    sys.exit(f"kubectl-fim needs Python 3.11 or newer; python3 here is {found}")

from plugins.kubectl_fim.cli import main

sys.exit(main(sys.argv[1:]))
