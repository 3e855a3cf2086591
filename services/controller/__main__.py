import sys

from services.controller.cli import main

sys.exit(main())
