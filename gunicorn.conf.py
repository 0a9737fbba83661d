"""gunicorn settings of a checkout: `gunicorn -c gunicorn.conf.py wsgi:app` (the Docker image,
bench/concurrency.py). They live in the package, chatgpt_web/gunicorn_config.py, so that an
installed service (the `chatgpt-web` command) has them too; this file only re-exports them.
"""
from chatgpt_web.gunicorn_config import *  # noqa: F403
