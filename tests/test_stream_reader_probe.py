"""The curl_cffi capability probe that picks the stream reader (transport.py)."""
from __future__ import annotations

import inspect

from curl_cffi import Curl, lib
from curl_cffi.requests import Session
from curl_cffi.requests.utils import set_curl_options

from chatgpt_web import transport


def test_the_installed_curl_cffi_has_everything_the_multi_handle_reader_needs():
    assert transport.probe_multi_handle_reader() == []
    assert transport.STREAM_READER == "multi-handle"


def test_a_curl_cffi_without_session_dns_is_caught_as_0_16_is():
    class SessionWithoutDns(Session):
        def __getattribute__(self, name):
            if name == "dns":
                raise AttributeError(name)
            return super().__getattribute__(name)

    assert transport.probe_multi_handle_reader(session_class=SessionWithoutDns) == ["Session.dns"]


def test_a_set_curl_options_without_a_keyword_we_pass_is_caught():
    parameters = [p for p in inspect.signature(set_curl_options).parameters.values()
                  if p.name != "dns"]

    def older(*args, **kwargs):
        raise AssertionError("the probe only reads the signature")

    older.__signature__ = inspect.Signature(parameters)
    assert transport.probe_multi_handle_reader(set_options=older) == ["set_curl_options(dns=)"]


def test_missing_private_curl_methods_and_multi_functions_are_caught():
    class BareCurl:
        pass

    class NoMulti:
        def __getattr__(self, name):
            if name.startswith("curl_multi_"):
                raise AttributeError(name)
            return getattr(lib, name)

    missing = transport.probe_multi_handle_reader(curl_class=BareCurl, binding=NoMulti())
    assert "Curl._ensure_cacert" in missing and "lib.curl_multi_poll" in missing
    assert transport.probe_multi_handle_reader(curl_class=Curl) == []


def test_readyz_names_the_reader(make_app):
    answer = make_app().test_client().get("/readyz")
    assert answer.get_json()["checks"]["stream_reader"] == {
        "ok": True, "reader": "multi-handle", "missing": []}


def test_answers_flow_through_the_public_fallback(client, token, monkeypatch):
    monkeypatch.setattr(transport, "READER", transport.PublicStreamReader)
    answer = client.post("/send_message", data={"access_token": token, "prompt": "Hello there"})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["text"] == "Echo: Hello there"
    streamed = client.post("/send_message", data={"access_token": token, "prompt": "Hi",
                                                  "stream": "true"}).get_data()
    assert b'"text":"Echo: Hi"' in streamed and streamed.endswith(b"data: [DONE]\n\n")
