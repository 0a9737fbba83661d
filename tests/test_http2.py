"""The service against the emulator over TLS and HTTP/2, as it meets chatgpt.com, configured as a
user would configure it: an https CHATGPT_BASE_URL and the emulator's CA as CHATGPT_CA_FILE.

Over HTTP/2, `CONDUIT_PREPARE_BESIDE=auto` (the default) sends the conduit prepare beside the
sentinel's requests as one more stream of the answer's connection; over HTTP/1.1 (TLS or not) it
keeps them in order (tests/test_protocol_2026.py).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import trustme
from curl_cffi.requests import exceptions as curl_errors

from chatgpt_web import create_app, stream_pump
from chatgpt_web.config import Config, ca_directory, os_ca_directory
from chatgpt_web.curl_transfer import pump_problems
from chatgpt_web.errors import ConfigError
from chatgpt_web.relay.wire import Exchange, TransportFailure
from chatgpt_web.stream_pump import Pump
from chatgpt_web.transport import new_session
from tests.emulator import Emulator
from tests.test_stream_pump import deltas_of, streamed_in_pump_at_once


@pytest.fixture
def emulator(tls_emulator):
    """Every service fixture (service_env, make_app, token, client) meets the TLS emulator."""
    return tls_emulator


@pytest.fixture
def service_env(service_env, emulator) -> dict:
    return {**service_env, "CHATGPT_CA_FILE": emulator.ca_file}


def send(client, **fields):
    return client.post("/send_message", data=fields)


def posts(emulator, suffix: str):
    return [r for r in emulator.requests_to(suffix) if r.method == "POST"]


# Seconds the emulator holds the conduit prepare's answer: far longer than a sentinel prepare
# takes to be sent, even on a loaded machine.
HOLD = 3.0


def test_a_2026_answer_over_http2(client, token, emulator):
    response = send(client, access_token=token, prompt="Hi")
    assert response.status_code == 200, response.json
    assert response.json["text"] == "Echo: Hi"
    paths = [r.path.removeprefix("/backend-api") for r in emulator.requests]
    assert paths[0] == "/" and paths[-1] == "/f/conversation"
    assert {r.http_version for r in emulator.requests} == {"HTTP/2"}
    assert len({r.client_port for r in emulator.requests}) == 1  # one connection


def test_a_streamed_2026_answer_over_http2_with_chunk_delays(make_app, token, emulator):
    emulator.switches.chunk_delay = 0.01
    client = make_app().test_client()
    response = client.post("/send_message", data={"access_token": token, "prompt": "Hi there",
                                                  "stream": "true"})
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "Echo: Hi there" in body
    assert emulator.requests_to("/f/conversation")[-1].http_version == "HTTP/2"


def test_a_2024_answer_over_http2(make_app, token, emulator):
    emulator.switches.dialect = "2024"  # a mirror that only knows the 2024 paths
    response = send(make_app().test_client(), access_token=token, prompt="Hi")
    assert response.status_code == 200, response.json
    assert response.json["text"] == "Echo: Hi"
    write = posts(emulator, "/backend-api/conversation")[-1]
    assert write.http_version == "HTTP/2"


@pytest.mark.parametrize("protocol", ["2026", "auto"])
def test_under_auto_the_conduit_prepare_is_one_more_stream_beside_the_sentinel(
        make_app, token, emulator, protocol):
    """The default: the connection's last answer came over HTTP/2, so the sentinel prepare is sent
    while the conduit prepare is unanswered, on the same connection."""
    client = make_app(CHATGPT_PROTOCOL=protocol).test_client()  # CONDUIT_PREPARE_BESIDE=auto
    assert send(client, access_token=token, prompt="Hi").status_code == 200
    emulator.switches.request_delays = (("/f/conversation/prepare", HOLD),)
    response = send(client, access_token=token, prompt="Hi again")
    assert response.status_code == 200, response.json
    assert response.json["text"] == "Echo: Hi again"
    conduit = posts(emulator, "/f/conversation/prepare")[-1]
    sentinel = posts(emulator, "/sentinel/chat-requirements/prepare")[-1]
    write = posts(emulator, "/f/conversation")[-1]
    assert sentinel.time < conduit.time + HOLD  # (which of the two arrives first is open)
    assert write.time >= conduit.time + HOLD  # and the write waited for the token
    assert write.headers["x-oai-turn-trace-id"] == conduit.headers["x-oai-turn-trace-id"]
    assert conduit.client_port == sentinel.client_port == write.client_port  # one connection
    assert conduit.http_version == sentinel.http_version == "HTTP/2"


def test_off_keeps_them_in_order_over_http2(make_app, token, emulator):
    client = make_app(CONDUIT_PREPARE_BESIDE="off").test_client()
    emulator.switches.request_delays = (("/f/conversation/prepare", 0.2),)
    for turn in range(2):
        assert send(client, access_token=token, prompt=f"Hi {turn}").status_code == 200
    conduit = posts(emulator, "/f/conversation/prepare")[-1]
    sentinel = posts(emulator, "/sentinel/chat-requirements/prepare")[-1]
    assert sentinel.time >= conduit.time + 0.2


@pytest.fixture(scope="module")
def http1_tls_emulator():
    with Emulator(tls=True, http2=False) as emulator:
        yield emulator


def test_under_auto_tls_without_http2_keeps_them_in_order(http1_tls_emulator, tmp_path):
    """`auto` follows the protocol the connection speaks, not the scheme: over TLS with
    HTTP/1.1 the sentinel prepare follows the conduit token, on the one kept connection."""
    emulator = http1_tls_emulator
    emulator.reset()
    token = emulator.mint_access_token()
    client = create_app({"CHATGPT_BASE_URL": emulator.url, "CHATGPT_AUTH_URL": emulator.url,
                         "CHATGPT_CA_FILE": emulator.ca_file, "CACHE_DIR": str(tmp_path),
                         "REQUEST_TIMEOUT": "30"}).test_client()
    emulator.switches.request_delays = (("/f/conversation/prepare", 0.2),)
    for turn in range(2):
        assert send(client, access_token=token, prompt=f"Hi {turn}").status_code == 200
    conduit = posts(emulator, "/f/conversation/prepare")[-1]
    sentinel = posts(emulator, "/sentinel/chat-requirements/prepare")[-1]
    assert sentinel.time >= conduit.time + 0.2
    assert {r.http_version for r in emulator.requests} == {"HTTP/1.1"}
    assert len({r.client_port for r in emulator.requests}) == 1


# --- CHATGPT_CA_FILE ---------------------------------------------------------------------------

def test_both_request_paths_trust_the_configured_ca(emulator):
    """The lean path (a JSON POST: curl_transfer.py sets the handle's options itself) and
    curl_cffi's own (a form POST) both verify the emulator with CHATGPT_CA_FILE, and both refuse
    it without."""
    trusted = Config.from_env({"CHATGPT_CA_FILE": emulator.ca_file})
    url = emulator.url + "/backend-api/anything"
    with new_session(trusted) as session:
        assert session.post(url, json={"a": 1}).status_code == 404
        assert session.post(url, data={"a": "1"}).status_code == 404
    assert [r.http_version for r in emulator.requests] == ["HTTP/2", "HTTP/2"]
    assert emulator.requests[0].json == {"a": 1} and emulator.requests[1].form == {"a": "1"}
    with new_session(Config()) as session:
        with pytest.raises(curl_errors.CertificateVerifyError):
            session.post(url, json={"a": 1})
        with pytest.raises(curl_errors.CertificateVerifyError):
            session.post(url, data={"a": "1"})


def test_without_the_ca_the_answer_is_a_clear_502(make_app, token):
    response = send(make_app(CHATGPT_CA_FILE="").test_client(), access_token=token, prompt="Hi")
    assert response.status_code == 502
    assert response.json["code"] == "upstream_unreachable"
    assert "TLS certificate could not be verified" in response.json["message"]
    assert "CHATGPT_CA_FILE" in response.json["message"]


# --- CHATGPT_CA_DIR ----------------------------------------------------------------------------

def hashed_directory(path: Path, *pem_files: str) -> Path:
    """`path` holding the PEM files linked by subject hash, as `openssl rehash` lays out
    /etc/ssl/certs."""
    path.mkdir()
    for index, pem in enumerate(pem_files):
        shutil.copy(pem, path / f"ca-{index}.pem")
    subprocess.run(["openssl", "rehash", str(path)], check=True, capture_output=True)
    return path


@pytest.fixture
def other_ca_file(tmp_path) -> str:
    """A CA that did not sign the emulator's certificate."""
    path = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(path))
    return str(path)


def test_the_lean_path_verifies_the_site_against_a_ca_directory(emulator, tmp_path,
                                                                 other_ca_file):
    trusting = hashed_directory(tmp_path / "trusting", other_ca_file, emulator.ca_file)
    url = emulator.url + "/backend-api/anything"
    with new_session(Config.from_env({"CHATGPT_CA_DIR": str(trusting)})) as session:
        assert session.post(url, json={"a": 1}).status_code == 404
        assert session.get(url).status_code == 404
    assert len(emulator.requests) == 2
    stranger = hashed_directory(tmp_path / "stranger", other_ca_file)
    with new_session(Config.from_env({"CHATGPT_CA_DIR": str(stranger)})) as session:
        with pytest.raises(curl_errors.CertificateVerifyError):
            session.post(url, json={"a": 1})


def test_the_relay_verifies_its_upstream_against_the_ca_directory(emulator, tmp_path,
                                                                  other_ca_file):
    def status_with(directory: Path) -> int | None:
        with Exchange("GET", emulator.url + "/v1/models-of-nobody", body=None, headers=[],
                      proxy=None, connect_timeout=10, total_timeout=10,
                      ca_directory=str(directory)) as exchange:
            exchange.wait_head(10)
            return exchange.status

    assert status_with(hashed_directory(tmp_path / "trusting", emulator.ca_file)) == 404
    with pytest.raises(TransportFailure):
        status_with(hashed_directory(tmp_path / "stranger", other_ca_file))


def test_an_answer_comes_over_tls_verified_by_the_ca_directory(make_app, token, emulator,
                                                                tmp_path):
    directory = hashed_directory(tmp_path / "cas", emulator.ca_file)
    response = send(make_app(CHATGPT_CA_FILE="", CHATGPT_CA_DIR=str(directory)).test_client(),
                    access_token=token, prompt="Hi")
    assert response.status_code == 200, response.json
    assert response.json["text"] == "Echo: Hi"


def test_a_ca_file_is_trusted_instead_of_the_ca_directory(make_app, token, emulator, tmp_path,
                                                          other_ca_file):
    stranger = hashed_directory(tmp_path / "stranger", other_ca_file)
    app = make_app(CHATGPT_CA_FILE=emulator.ca_file, CHATGPT_CA_DIR=str(stranger))
    assert send(app.test_client(), access_token=token, prompt="Hi").json["text"] == "Echo: Hi"


def test_auto_takes_the_directory_only_where_the_bundle_is_the_os_one_beside_it(tmp_path,
                                                                                other_ca_file):
    os_certs = hashed_directory(tmp_path / "certs", other_ca_file)
    bundle = os_certs / "ca-certificates.crt"  # update-ca-certificates' bundle, beside the links
    shutil.copy(other_ca_file, bundle)
    assert os_ca_directory(str(bundle)) == str(os_certs)
    own = os_certs / "my-bundle.pem"  # a bundle of one's own: its certificates may differ
    shutil.copy(other_ca_file, own)
    assert os_ca_directory(str(own)) is None
    unlinked = tmp_path / "unlinked"
    unlinked.mkdir()
    shutil.copy(other_ca_file, unlinked / "ca-certificates.crt")
    assert os_ca_directory(str(unlinked / "ca-certificates.crt")) is None
    assert ca_directory("off") is None
    assert ca_directory(f"  {os_certs}  ") == str(os_certs)


def test_a_ca_directory_without_hashed_certificates_stops_the_start(tmp_path):
    with pytest.raises(ConfigError, match="CHATGPT_CA_DIR must be auto, off or a directory"):
        Config.from_env({"CHATGPT_CA_DIR": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="openssl rehash"):
        Config.from_env({"CHATGPT_CA_DIR": str(tmp_path)})


def test_a_ca_file_that_cannot_be_read_or_holds_no_certificate_stops_the_start(tmp_path):
    with pytest.raises(ConfigError, match="CHATGPT_CA_FILE names a file that cannot be read"):
        create_app({"CHATGPT_CA_FILE": str(tmp_path / "missing.pem"),
                    "CACHE_DIR": str(tmp_path)})
    empty = tmp_path / "empty.pem"
    empty.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match="CHATGPT_CA_FILE must name a PEM file of CA cert"):
        Config.from_env({"CHATGPT_CA_FILE": str(empty)})


# --- the stream pump (STREAM_PUMP=on): a TLS stream waits in the pump's epoll ----------------

@pytest.mark.skipif(not stream_pump.AVAILABLE or pump_problems(),
                    reason="greenlet or curl_multi_waitfds is missing")
@pytest.mark.parametrize("chunk_delay", [0.0, 0.01])
def test_answers_over_http2_stream_from_the_pump(make_app, token, emulator, chunk_delay):
    """The pump waits on curl's sockets (curl_multi_waitfds) and timers: over TLS, bytes curl has
    already decrypted are not on the socket, and must not be left waiting there. Many small events
    at once (no delay) and spread ones, three answers in one pump thread."""
    answer = " ".join(f"word{index}" for index in range(200))
    emulator.switches.answer, emulator.switches.chunk_delay = answer, chunk_delay
    pump = Pump(name="test-pump-h2")
    outcomes = streamed_in_pump_at_once(pump, make_app().test_client(),
                                        {"access_token": token, "prompt": "Hi"})
    assert [deltas_of(sse) for sse, _ in outcomes] == [answer] * 3
    assert {ident for _, ran_in in outcomes for ident in ran_in} == {pump.thread.ident}
    assert {r.http_version for r in emulator.requests} == {"HTTP/2"}
