"""bench/peers.py (the service beside chat2api) and the measuring it shares with
bench/concurrency.py. chat2api itself is not installed here; these tests use a small chat server
of their own in its place."""
from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import textwrap
import time

from bench import concurrency, peers
from tests.servers import free_port

# A chat server that spends 40 ms of CPU on each request, then streams one answer word and
# the end of the stream (or, asked for the whole answer, one JSON body), closing the connection.
_SMALL_CHAT_SERVER = textwrap.dedent("""
    import json, sys, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Chat(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            started = time.thread_time()
            while time.thread_time() - started < 0.04:
                pass
            kind = "text/event-stream" if body.get("stream") else "application/json"
            answer = (b'data: {"content": "Echo: hi"}\\n\\ndata: [DONE]\\n\\n'
                      if body.get("stream") else b'{"content": "Echo: hi"}')
            self.send_response(200)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(answer)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Chat).serve_forever()
""")


def _small_chat_server() -> tuple[subprocess.Popen, int]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", _SMALL_CHAT_SERVER, str(port)])
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError("the small chat server did not start")


def test_a_measured_run_counts_the_servers_cpu_and_judges_each_answer():
    process, port = _small_chat_server()
    try:
        for face in peers.FACES:
            body = peers.request_of(face, "token", "hi")
            run = concurrency.measured(process.pid, 5, lambda: concurrency.ask(  # noqa: B023
                port, "/v1/chat/completions", *body, whole=face == "whole"), 20)  # noqa: B023
            assert [outcome.ok for outcome in run.outcomes] == [True] * 5, run.outcomes
            assert run.cpu >= 0.15  # each request's 40 ms (in clock ticks), in the server
            assert run.peak.rss > 0 and run.wall > 0
            figures = peers.Figures.of(run, 5)
            assert figures.ok == 1.0 and figures.cpu_ms >= 30
    finally:
        process.kill()
        process.wait()


def test_chat2api_finds_the_published_vocabularies_where_tiktoken_caches_them(tmp_path):
    peers.fill_tiktoken_cache(tmp_path)
    # The SHA-256 tiktoken checks of each file it downloads (tiktoken_ext/openai_public.py).
    published = {
        "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    }
    for name, digest in published.items():
        url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
        cached = tmp_path / hashlib.sha1(url.encode()).hexdigest()
        assert hashlib.sha256(cached.read_bytes()).hexdigest() == digest
    assert len(list(tmp_path.iterdir())) == 2


def test_the_summary_row_gives_service_over_chat2api_of_the_medians():
    def figures(cpu: float, rss: float) -> peers.Figures:
        return peers.Figures(ok=1.0, ttft_p50=1.0, ttft_p99=2.0, cpu_ms=cpu, rss_mb=rss,
                             pss_mb=rss / 2, switches=50)

    ours = peers.medians([figures(10, 200), figures(14, 240), figures(12, 220)])
    theirs = peers.medians([figures(30, 400), figures(20, 440)])
    assert (ours.cpu_ms, ours.rss_mb, theirs.cpu_ms, theirs.rss_mb) == (12, 220, 25, 420)
    row = peers.ratio_row(ours, theirs)
    assert "CPU/answer 0.48" in row and "RSS 0.52" in row and "TTFT p99 1.00" in row
    no_switches = peers.Figures(ok=1.0, ttft_p50=1.0, ttft_p99=2.0, cpu_ms=20, rss_mb=400,
                                pss_mb=200, switches=0)
    assert "cs/answer -" in peers.ratio_row(ours, no_switches)
