"""`python -m microprop`: the `microprop` command.

Runs on: host.
"""

import sys

from microprop.firmware_tools.cli import main

sys.exit(main())
