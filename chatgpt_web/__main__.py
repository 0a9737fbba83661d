"""`chatgpt-web` (or `python -m chatgpt_web`): serve the app with gunicorn and the package's
server settings (chatgpt_web/gunicorn_config.py: gthread workers for streaming), from any
directory: nothing is read from a checkout.
"""
from __future__ import annotations

import os
import sys

SERVER_SETTINGS = "python:chatgpt_web.gunicorn_config"
APP = "chatgpt_web:create_app()"


def main() -> None:
    """Start gunicorn on $PORT (default 3000); gunicorn replaces this process."""
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "-c", SERVER_SETTINGS, APP])


if __name__ == "__main__":
    main()
