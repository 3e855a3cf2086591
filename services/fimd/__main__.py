"""`python -m services.fimd`: see services/fimd/cli.py."""

import sys

from services.fimd.cli import main

sys.exit(main())
