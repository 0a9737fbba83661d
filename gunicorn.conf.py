"""gunicorn settings for chatgpt_web. Every value can be overridden by the environment variable
named beside it. Threads, not gevent: curl_cffi blocks its thread while it reads the upstream."""
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '3000')}"
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "32"))
# Streams last as long as the answer; this only bounds a worker that stopped responding at all.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "600"))
graceful_timeout = 30
keepalive = 5
accesslog = None  # the app logs one private line per request itself
