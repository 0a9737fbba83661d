"""relay/wire.py: relay requests share curl links (and their connections), and carry nothing of
each other.

Requests go to the fake OpenAI API over real HTTP; it records every request it received.
"""
from __future__ import annotations

import json
import threading

from chatgpt_web.relay import wire
from chatgpt_web.relay.wire import Exchange


def _in_a_fresh_thread(work):
    """Run `work` on a new thread (a gunicorn worker thread: its own handle pool), re-raising."""
    result, failures = [], []

    def run():
        try:
            result.append(work())
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive()
    if failures:
        raise failures[0]
    return result[0]


def _exchange(method, url, headers, body=None):
    return Exchange(method, url, body=body, headers=headers, proxy=None, connect_timeout=10,
                    total_timeout=30)


def test_a_second_request_on_the_thread_reuses_the_handle_and_carries_none_of_the_first(
        fake_openai):
    first_body = json.dumps({"model": "gpt-4o", "messages": [
        {"role": "user", "content": "hello"}]}).encode()

    def two_requests():
        with _exchange("POST", fake_openai.base_url + "/chat/completions",
                       [("Content-Type", "application/json"),
                        ("OpenAI-Organization", "org-of-the-first-upstream"),
                        ("X-First-Request", "yes"),
                        ("Authorization", "Bearer sk-fake-good-1")], first_body) as first:
            assert first.wait_head(30) and first.status == 200
            first.read_all(1 << 20, 30)
            handle = first._curl
        with _exchange("GET", fake_openai.base_url + "/models",
                       [("Accept", "application/json")]) as second:
            assert second.wait_head(30)
            models = second.read_all(1 << 20, 30)
            reused = second._curl is handle
        with _exchange("POST", fake_openai.base_url + "/chat/completions",
                       [("Content-Type", "application/json"),
                        ("Authorization", "Bearer sk-fake-good-2")], first_body) as third:
            assert third.wait_head(30) and third.status == 200
            third.read_all(1 << 20, 30)
            reused_again = third._curl is handle
        return reused, reused_again, second.status, models

    reused, reused_again, status, models = _in_a_fresh_thread(two_requests)

    assert reused and reused_again  # one easy handle served the thread's three requests
    first, second, third = fake_openai.requests[-3:]
    assert (first.method, first.key, first.headers["x-first-request"]) == ("POST", "sk-fake-good-1",
                                                                          "yes")
    # The second request is the GET it asked for, with its own headers and nothing else.
    assert (second.method, second.path, second.body) == ("GET", "/v1/models", b"")
    assert second.key is None and status == 401  # no key of the first request went with it
    assert b"sk-fake-good-1" not in models
    assert {"x-first-request", "openai-organization", "content-type"}.isdisjoint(second.headers)
    assert second.headers["accept"] == "application/json"
    # The third sends its own key once, and none of the first request's headers.
    assert third.key == "sk-fake-good-2"
    assert {"x-first-request", "openai-organization"}.isdisjoint(third.headers)
    assert third.json == json.loads(first_body)



def _stream(fake_openai, key: str) -> bytes:
    body = json.dumps({"model": "gpt-4o", "stream": True, "messages": [
        {"role": "user", "content": "one two"}]}).encode()
    with _exchange("POST", fake_openai.base_url + "/chat/completions",
                   [("Content-Type", "application/json"),
                    ("Authorization", f"Bearer {key}")], body) as exchange:
        assert exchange.wait_head(30) and exchange.status == 200
        return exchange.read_all(1 << 20, 30)


def test_the_next_request_on_any_thread_goes_out_on_the_connection_the_last_one_left_open(
        fake_openai):
    # A worker serves each request on whichever of its threads is free: links kept per thread
    # met their upstream again too rarely, and every relayed answer began with a new connection.
    first = _in_a_fresh_thread(lambda: _stream(fake_openai, "sk-fake-good-1"))
    second = _in_a_fresh_thread(lambda: _stream(fake_openai, "sk-fake-good-2"))

    assert first.endswith(b"data: [DONE]\n\n") and second.endswith(b"data: [DONE]\n\n")
    one, two = fake_openai.requests[-2:]
    assert one.client_port == two.client_port  # one connection served both
    assert (one.key, two.key) == ("sk-fake-good-1", "sk-fake-good-2")


def test_idle_links_are_bounded_in_number_and_in_time(monkeypatch):
    closed = []

    class Link:
        def __init__(self, name):
            self.name, self.idle_since = name, 0.0

        def close(self):
            closed.append(self.name)

    links = wire._IdleLinks()
    monkeypatch.setattr(wire, "MAX_IDLE_LINKS", 2)
    for name in ("a", "b", "c"):
        links.give_back(Link(name))
    assert closed == ["a"]  # the oldest goes past the bound
    assert links.take().name == "c"  # the newest is lent first
    links._idle[0].idle_since -= wire.LINK_IDLE_SECONDS + 1  # "b" has waited too long now
    links.give_back(Link("d"))
    assert closed == ["a", "b"]
    assert links.take().name == "d"
    assert isinstance(links.take(), wire._Link)  # none idle: a new link
