"""`python -m services.fimd`: see services/fimd/cli.py."""

import os
import sys

# fimd starts children with fork+exec only; gRPC's fork handlers are not needed and would
# log a warning on every spawn. Must be set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "0")

from services.fimd.cli import main

sys.exit(main())
