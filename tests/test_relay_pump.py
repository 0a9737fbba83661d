"""Relayed streams in the stream pump: with STREAM_PUMP=on, one thread of the worker reads and
sends all of its relayed streams (their bodies wait only through their Exchange's curl handle);
with it off, each stream wakes its own request thread.

The production server (gunicorn, one worker) relays to the fake OpenAI API, which paces its
events; the worker's threads are watched through /proc while the streams run.
"""
import json
import time

import pytest

from tests.relay_fixtures import upstream
from tests.servers import ServerProcess
from tests.test_stream_pump import RawStream, assert_woken, switches_per_thread

KEY = "sk-cw-relay-pump"
WAIT = 60  # generous: a loaded 2-core machine


class RelayedStream(RawStream):
    """A streamed chat completion on a raw socket, read to its end by a thread of its own."""

    def __init__(self, server: ServerProcess, words: int):
        body = json.dumps({"model": "gpt-4o", "stream": True, "messages": [
            {"role": "user", "content": " ".join(f"w{i}" for i in range(words))}]}).encode()
        super().__init__(
            server, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    b"Content-Type: application/json\r\nAuthorization: Bearer "
                    + KEY.encode() + b"\r\n", body, timeout=WAIT)

    @property
    def events(self) -> int:
        return self.received.count(b"data:")


@pytest.mark.parametrize("setting", ["on", "off"])
def test_relayed_streams_wake_one_thread_of_the_worker_not_one_each(tmp_path, fake_openai,
                                                                     setting):
    path = tmp_path / "upstreams.json"
    path.write_text(json.dumps({"upstreams": [upstream(fake_openai.base_url, "k")]}))
    server = ServerProcess.gunicorn({
        "CACHE_DIR": str(tmp_path / "cache"), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "WEB_CONCURRENCY": "1", "GUNICORN_THREADS": "32", "MAX_CONNECTIONS_PER_IP": "0",
        "API_KEYS": KEY, "UPSTREAMS_FILE": str(path), "K_openai_0": "sk-fake-good-pump",
        "RELAY_MODEL_DISCOVERY": "0", "RATE_LIMIT": "off", "RATE_LIMIT_IP": "off",
        "STREAM_PUMP": setting})
    fake_openai.chunk_delay = 0.1  # 44 events, 4 s a stream
    streams = []
    try:
        server.wait_until_serving(timeout=WAIT)
        streams = [RelayedStream(server, words=40) for _ in range(10)]
        for stream in streams:
            assert stream.streaming.wait(WAIT), stream.received[:300]
        [worker] = server.worker_pids()
        before = switches_per_thread(worker)
        seen = [stream.events for stream in streams]
        deadline = time.monotonic() + WAIT
        # Until every stream has had three more events (without the pump, each has woken its
        # thread by then), however slowly a loaded machine runs them.
        while any(stream.events < count + 3 for stream, count in zip(streams, seen, strict=True)):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        after = switches_per_thread(worker)
        assert not any(stream.done.is_set() for stream in streams)  # all still streaming
        for stream in streams:  # and each gets all of its answer
            assert stream.done.wait(WAIT), stream.received[-300:]
            assert stream.received.startswith(b"HTTP/1.1 200"), stream.received[:300]
            assert stream.received.count(b"data:") == 44  # role, 41 words, finish, [DONE]
            assert b'"usage"' not in stream.received
    finally:
        fake_openai.chunk_delay = 0.0
        for stream in streams:
            stream.sock.close()
        server.stop()
    assert_woken(before, after, setting, each=10)
