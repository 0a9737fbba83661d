"""`python -m chatgpt_web [command]`: the command line (cli.py); with no command, serve."""
from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
