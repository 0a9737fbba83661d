# chatgpt_web: gunicorn (gthread) serving wsgi:app, configured by gunicorn.conf.py.
#   docker build -t chatgpt-web . && docker run -p 3000:3000 -v chatgpt-cache:/data chatgpt-web
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PORT=3000 \
    CACHE_DIR=/data/cache

WORKDIR /app

# Dependencies in their own layer: rebuilt only when requirements.txt changes.
COPY requirements.txt ./
RUN pip install -r requirements.txt

# An unprivileged user owns only the cache volume; the code stays root-owned and read-only to it.
RUN useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin app \
    && mkdir -p /data/cache \
    && chown -R app:app /data \
    && chmod 700 /data/cache
COPY wsgi.py gunicorn.conf.py ./
COPY chatgpt_web ./chatgpt_web
# Bytecode compiled once here (PYTHONDONTWRITEBYTECODE keeps the running service from writing it):
# otherwise every process compiles the package from source at each start, which costs start time
# and about 2 MB of memory summed over the master and two workers (README "Memory").
RUN python -m compileall -q wsgi.py gunicorn.conf.py chatgpt_web

USER app
VOLUME ["/data"]
EXPOSE 3000

# Liveness through the real server, with the standard library only (the slim image has no curl).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '3000'), timeout=4)"]

CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
