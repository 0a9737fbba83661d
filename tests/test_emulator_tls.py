"""The emulator over TLS (tests/emulator/tls.py): HTTP/2 by ALPN as chatgpt.com's front offers it,
HTTP/1.1 for a client that asks for it, a certificate only the emulator's own CA vouches for.

Clients here are plain curl_cffi sessions (not the service), trusting `emulator.ca_file`.
"""
from __future__ import annotations

import asyncio
import time

import pytest
from curl_cffi import CurlHttpVersion
from curl_cffi import requests as curl_requests
from curl_cffi.requests import exceptions as curl_errors

from tests.emulator import Emulator
from tests.test_emulator import Chat, body, sse_events

HTTP2 = 3  # CURL_HTTP_VERSION_2_0, as curl_cffi's Response.http_version reports it
HTTP11 = 2  # CURL_HTTP_VERSION_1_1
# Seconds a held request is held: far longer than another request takes, even on a loaded machine.
HOLD = 3.0


def trusting(emulator, **settings) -> curl_requests.Session:
    return curl_requests.Session(impersonate="chrome", verify=emulator.ca_file, **settings)


def tls_chat(emulator) -> Chat:
    chat = Chat(emulator)
    chat.session.verify = emulator.ca_file
    return chat


def test_a_browser_gets_http2_and_the_request_is_recorded_as_such(tls_emulator):
    assert tls_emulator.url.startswith("https://127.0.0.1:")
    with trusting(tls_emulator) as session:
        page = session.get(tls_emulator.url + "/")
        again = session.get(tls_emulator.url + "/")
    assert (page.status_code, page.http_version, again.http_version) == (200, HTTP2, HTTP2)
    first, second = tls_emulator.requests
    assert first.http_version == second.http_version == "HTTP/2"
    assert first.client_port == second.client_port  # one connection for both
    # HTTP/2 has no Host header; its :authority is recorded as one, as HTTP/1.1's Host.
    assert first.headers["host"] == tls_emulator.url.removeprefix("https://")
    assert "user-agent" in first.headers and not any(name.startswith(":")
                                                     for name in first.headers)


def test_a_client_that_asks_for_http1_gets_it_over_tls(tls_emulator):
    with trusting(tls_emulator, http_version=CurlHttpVersion.V1_1) as session:
        page = session.get(tls_emulator.url + "/")
    assert (page.status_code, page.http_version) == (200, HTTP11)
    assert tls_emulator.requests[-1].http_version == "HTTP/1.1"


def test_without_http2_the_emulator_offers_only_http1():
    with Emulator(tls=True, http2=False) as emulator, trusting(emulator) as session:
        page = session.get(emulator.url + "/")
        assert (page.status_code, page.http_version) == (200, HTTP11)


def test_a_client_that_does_not_trust_the_emulators_ca_is_refused(tls_emulator):
    with curl_requests.Session(impersonate="chrome") as session, \
            pytest.raises(curl_errors.CertificateVerifyError):
        session.get(tls_emulator.url + "/")


def test_a_2026_turn_streams_over_http2_with_its_chunk_delays(tls_emulator):
    """Each chunk leaves when the app yields it (not when the answer ends): the chunks arrive
    spread over at least most of the delays the emulator slept between them."""
    tls_emulator.switches.answer = " ".join(["word"] * 12)
    tls_emulator.switches.chunking, tls_emulator.switches.pings = False, False
    tls_emulator.switches.chunk_delay = 0.1
    answer = tls_chat(tls_emulator).post(body(v1=True), stream=True)
    arrivals, chunks = [], []
    for chunk in answer.iter_content():
        arrivals.append(time.monotonic())
        chunks.append(chunk)
    answer.close()
    assert answer.status_code == 200 and answer.http_version == HTTP2
    events = sse_events(b"".join(chunks))
    assert events[-1] == (None, "[DONE]") and len(chunks) == len(events) > 12
    assert arrivals[-1] - arrivals[0] >= 0.5 * 0.1 * (len(chunks) - 1)


def test_a_held_request_does_not_hold_another_stream_of_its_connection(tls_emulator):
    tls_emulator.switches.request_delays = (("/held", HOLD),)

    async def both() -> tuple:
        async with curl_requests.AsyncSession(impersonate="chrome",
                                              verify=tls_emulator.ca_file) as session:
            await session.get(tls_emulator.url + "/")  # the connection, known to be HTTP/2
            held = asyncio.ensure_future(session.get(tls_emulator.url + "/backend-api/held"))
            while not tls_emulator.requests_to("/held"):
                await asyncio.sleep(0.01)
            other = await session.get(tls_emulator.url + "/")
            return await held, other

    held, other = asyncio.run(asyncio.wait_for(both(), 60))
    assert held.http_version == other.http_version == HTTP2
    page, held_request, other_request = tls_emulator.requests
    assert page.client_port == held_request.client_port == other_request.client_port
    assert other_request.time < held_request.time + HOLD  # answered while the other was held


def test_a_client_that_leaves_mid_stream_is_noticed(tls_emulator):
    tls_emulator.switches.answer = " ".join(["word"] * 200)
    tls_emulator.switches.chunk_delay = 0.02
    answer = tls_chat(tls_emulator).post(body(v1=True), stream=True)
    next(answer.iter_content())
    answer.close()
    deadline = time.monotonic() + 30
    while tls_emulator.streams_left == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tls_emulator.streams_left == 1


def test_stopping_the_tls_emulator_closes_its_kept_connections():
    emulator = Emulator(tls=True).start()
    with trusting(emulator) as session:
        assert session.get(emulator.url + "/").status_code == 200
        emulator.stop()
        with pytest.raises(curl_errors.RequestException):
            session.get(emulator.url + "/", timeout=10)
