"""`python -m chatgpt_web`: serve the app with gunicorn and gunicorn.conf.py (threads, streaming)."""
from __future__ import annotations

import os
import sys


def main() -> None:
    """Start gunicorn on $PORT (default 3000) with the repository's gunicorn.conf.py."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.chdir(root)
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"])


if __name__ == "__main__":
    main()
