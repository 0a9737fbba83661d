"""A bare WSGI passthrough to one upstream: the floor for any relay on this server stack.

bench/relay.py runs it (`gunicorn -c gunicorn.conf.py bench.passthrough:app`, the service's own
worker class, workers and threads) beside the service, against the same fake upstream. Each
request is sent on to BENCH_UPSTREAM_URL with the relay's transport (chatgpt_web/relay/wire.py,
curl) and the answer's bytes are passed back as they arrive. There is nothing else: no Flask, no
keys, routing, key health, ledger, first-event check or stream changes. What it adds to the
direct answer is the cost of the extra hop itself (a second HTTP server, curl, one Python loop
turn and one socket write per event), which no work in the service's own code can remove.
Not part of the service.
"""
from __future__ import annotations

import os

from chatgpt_web.relay.wire import Exchange, TransportFailure

UPSTREAM = os.environ.get("BENCH_UPSTREAM_URL", "")  # the fake's base URL, ending in /v1
TIMEOUT = 120.0


def app(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    path = environ.get("PATH_INFO", "").removeprefix("/v1")
    headers = [("Content-Type", environ.get("CONTENT_TYPE") or "application/json"),
               ("Authorization", environ.get("HTTP_AUTHORIZATION", ""))]
    method = "GET" if environ.get("REQUEST_METHOD") == "GET" else "POST"
    exchange = Exchange(method, UPSTREAM + path, body=body, headers=headers, proxy=None,
                        connect_timeout=10, total_timeout=TIMEOUT)
    try:
        if not exchange.wait_head(TIMEOUT):
            raise TransportFailure("timeout", 28)
    except TransportFailure:
        exchange.close()
        start_response("502 Bad Gateway", [("Content-Type", "text/plain")])
        return [b"upstream failed\n"]
    start_response(f"{exchange.status} Relayed", [
        ("Content-Type", exchange.headers.get("content-type", "application/octet-stream"))])

    def pipe():
        try:
            while True:
                try:
                    data = exchange.read(TIMEOUT)
                except TransportFailure:
                    return
                if not data:
                    return
                yield data
        finally:
            exchange.close()
    return pipe()
