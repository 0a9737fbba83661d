"""POST /send_message against the local ChatGPT emulator, over real HTTP through curl_cffi."""
import json
import threading
import time

import pytest

from chatgpt_web.transport import user_agent_for
from tests.sent_turns import conversation_posts

# The tests that use the emulator run against the site as it is now and against a mirror
# that only knows the 2024 paths (tests/conftest.py).
BOTH_DIALECTS = True


def send(client, **fields):
    return client.post("/send_message", data=fields)


def sse_events(body: bytes):
    """Split our SSE output into (event name, data) pairs."""
    events = []
    for block in body.decode().split("\n\n"):
        if not block.strip():
            continue
        name, data = None, []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        events.append((name, "\n".join(data)))
    return events


def test_send_message_answers_text_and_ids(client, token):
    response = send(client, access_token=token, prompt="Hello there")
    assert response.status_code == 200, response.json
    assert response.json["text"] == "Echo: Hello there"
    assert response.json["conversation_id"]
    assert response.json["parent_message_id"]


@pytest.mark.parametrize("encoding", ["json", "multipart"])
def test_send_message_accepts_json_and_multipart(client, token, encoding):
    fields = {"access_token": token, "prompt": "Hi"}
    if encoding == "json":
        response = client.post("/send_message", json=fields)
    else:
        response = client.post("/send_message", data=fields, content_type="multipart/form-data")
    assert response.status_code == 200, response.json
    assert response.json["text"] == "Echo: Hi"


def test_send_message_continues_conversation(client, token, emulator):
    first = send(client, access_token=token, prompt="one").json
    second = send(client, access_token=token, prompt="two",
                  conversation_id=first["conversation_id"],
                  parent_message_id=first["parent_message_id"]).json
    third = send(client, access_token=token, prompt="three",
                 conversation_id=second["conversation_id"],
                 parent_message_id=second["parent_message_id"]).json
    assert third["text"] == "Echo: three"
    assert first["conversation_id"] == second["conversation_id"] == third["conversation_id"]
    bodies = conversation_posts(emulator)
    assert len(bodies) == 3
    assert "conversation_id" not in bodies[0]
    assert bodies[1]["conversation_id"] == first["conversation_id"]
    assert bodies[1]["parent_message_id"] == first["parent_message_id"]
    assert bodies[2]["conversation_id"] == first["conversation_id"]
    assert bodies[2]["parent_message_id"] == second["parent_message_id"]
    assert second["parent_message_id"] != first["parent_message_id"]


def test_request_body_follows_the_browser(client, token, emulator, dialect):
    send(client, access_token=token, prompt="Hi", model="gpt-4o")
    body = conversation_posts(emulator)[0]
    assert body["action"] == "next"
    assert body["model"] == "gpt-4o"
    if dialect == "2026":
        assert emulator.requests_to("/f/conversation")
        assert body["parent_message_id"] == "client-created-root"
        assert body["client_prepare_state"] == "success"
        assert body["supported_encodings"] == ["v1"]
        assert "thinking_effort" not in body
    else:
        assert body["supported_encodings"] == []
    assert body["messages"][0]["author"] == {"role": "user"}
    assert body["messages"][0]["content"] == {"content_type": "text", "parts": ["Hi"]}


def test_user_agent_and_client_hints_match_the_impersonated_browser(client, token, emulator, app):
    send(client, access_token=token, prompt="Hi")
    headers = emulator.requests_to("/conversation")[-1].headers
    impersonate = app.extensions["chatgpt_web"].config.impersonate
    assert headers["user-agent"] == user_agent_for(impersonate)
    version = "".join(ch for ch in impersonate if ch.isdigit())
    assert f'v="{version}"' in headers["sec-ch-ua"]


@pytest.mark.parametrize("missing", ["access_token", "prompt"])
def test_missing_required_field_is_400(client, token, missing):
    fields = {"access_token": token, "prompt": "Hi"}
    del fields[missing]
    response = send(client, **fields)
    assert response.status_code == 400
    assert response.json["code"] == "missing_field" and missing in response.json["message"]


@pytest.mark.parametrize("fields, code", [
    ({"timeout": "soon"}, "invalid_field"),
    ({"timeout": "0"}, "invalid_field"),
    ({"stream": "perhaps"}, "invalid_field"),
    ({"conversation_id": "abc"}, "invalid_field"),
    ({"conversation_id": "../../etc", "parent_message_id": "x"}, "invalid_field"),
    ({"reverse_proxy": "http://169.254.169.254/api/conversation"}, "reverse_proxy_not_allowed"),
])
def test_bad_fields_are_400_without_upstream_call(client, token, emulator, fields, code):
    response = send(client, access_token=token, prompt="Hi", **fields)
    assert response.status_code == 400 and response.json["code"] == code
    assert emulator.requests_to("/conversation") == []


def test_malformed_json_body_is_400(client):
    response = client.post("/send_message", data="[1,2", content_type="application/json")
    assert response.status_code == 400


def test_prompt_over_limit_is_413(make_app, token):
    client = make_app(MAX_PROMPT_CHARS="10").test_client()
    response = send(client, access_token=token, prompt="x" * 11)
    assert response.status_code == 413 and response.json["code"] == "prompt_too_long"


def test_expired_jwt_is_refused_before_any_upstream_call(client, emulator):
    expired = emulator.mint_access_token(exp_in=-60)
    response = send(client, access_token=expired, prompt="Hi")
    assert response.status_code == 401 and response.json["code"] == "token_expired"
    assert emulator.requests == []


def test_non_jwt_token_is_passed_through_to_the_upstream(client, emulator):
    response = send(client, access_token="proxy-issued-token", prompt="Hi")
    assert response.status_code == 401
    assert [r for r in emulator.requests
            if r.headers.get("authorization") == "Bearer proxy-issued-token"]
    assert "proxy-issued-token" not in response.get_data(as_text=True)


def test_stream_sends_deltas_then_answer_then_done(client, token, emulator):
    emulator.switches.answer = "one two three four five six seven"
    emulator.switches.words_per_delta = 1
    emulator.switches.chunking = False  # one event per write, each after a pause: pieces
    emulator.switches.chunk_delay = 0.05  # that arrive apart are relayed apart
    response = send(client, access_token=token, prompt="Hi", stream="true")
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    assert response.headers["X-Accel-Buffering"] == "no"
    events = sse_events(response.get_data())
    assert events[-1] == (None, "[DONE]")
    final = json.loads(events[-2][1])
    deltas = [json.loads(data)["delta"] for name, data in events[:-2]]
    assert len(deltas) > 1
    assert "".join(deltas) == final["text"] == "one two three four five six seven"
    assert final["conversation_id"] and final["parent_message_id"]


def test_stream_relays_each_piece_as_it_arrives(live_service, token, emulator):
    from curl_cffi import requests as curl_requests
    emulator.switches.answer = " ".join(f"w{i}" for i in range(8))
    emulator.switches.words_per_delta = 1
    emulator.switches.chunking = False  # one event per write, each after a pause
    emulator.switches.chunk_delay = 0.1
    arrivals = []
    started = time.monotonic()
    with curl_requests.Session() as session:
        response = session.post(live_service.url + "/send_message", stream=True, timeout=30,
                                data={"access_token": token, "prompt": "Hi", "stream": "true"})
        for line in response.iter_lines():
            if line.startswith(b"data: {\"delta\""):
                arrivals.append(time.monotonic() - started)
        response.close()
    assert len(arrivals) >= 4
    # Buffering anywhere would deliver every piece at the end together.
    assert arrivals[-1] - arrivals[0] > 0.5, arrivals


@pytest.mark.parametrize("encoding", ["legacy", "v1"])
def test_both_stream_formats_give_the_same_answer(client, token, emulator, encoding):
    emulator.switches.force_format = encoding
    response = send(client, access_token=token, prompt="formats")
    assert response.status_code == 200, response.json
    assert response.json["text"] == "Echo: formats"


def test_answer_cut_by_max_tokens_is_continued(client, token, emulator):
    emulator.switches.answer = "alpha beta gamma delta epsilon zeta eta theta"
    emulator.switches.max_tokens_cuts = 2
    response = send(client, access_token=token, prompt="long")
    assert response.status_code == 200, response.json
    assert response.json["text"] == "alpha beta gamma delta epsilon zeta eta theta"
    actions = [body["action"] for body in conversation_posts(emulator)]
    assert actions == ["next", "continue", "continue"]


@pytest.mark.parametrize("failure, status, code", [
    ("token_expired", 401, "token_expired"),
    ("invalid_token", 401, "invalid_token"),
    ("cloudflare", 403, "cloudflare_challenge"),
    ("rate_limit", 429, "upstream_rate_limited"),
    ("rate_limit_text", 429, "upstream_rate_limited"),
    ("server_error", 502, "upstream_error"),
    ("too_long", 413, "prompt_too_long"),
    ("not_json", 502, "upstream_bad_answer"),
])
def test_upstream_failures_map_to_truthful_statuses(client, token, emulator, failure, status, code):
    emulator.switches.fail_with = failure
    response = send(client, access_token=token, prompt="Hi")
    assert response.status_code == status, response.json
    assert response.json["code"] == code
    body = response.get_data(as_text=True)
    assert token not in body and "<html" not in body.lower()


def test_rate_limit_passes_clears_in_as_retry_after(client, token, emulator):
    emulator.switches.fail_with = "rate_limit"
    emulator.switches.clears_in = 90
    response = send(client, access_token=token, prompt="Hi")
    assert response.status_code == 429 and response.headers["Retry-After"] == "90"


def test_unknown_conversation_is_404(client, token):
    response = send(client, access_token=token, prompt="Hi",
                    conversation_id="6974e0a3-b684-8321-a73a-bf4e7b6dfafe",
                    parent_message_id="0fe98393-5d68-4e41-9fb6-75b50f27c79e")
    assert response.status_code == 404 and response.json["code"] == "conversation_not_found"


def test_in_stream_error_is_502(client, token, emulator):
    emulator.switches.stream_error = True
    response = send(client, access_token=token, prompt="Hi")
    assert response.status_code == 502 and response.json["code"] == "upstream_stream_error"


def test_moderation_block_is_a_clear_error_not_empty_text(client, token, emulator):
    emulator.switches.moderation_blocked = True
    response = send(client, access_token=token, prompt="Hi")
    assert response.status_code == 400 and response.json["code"] == "content_blocked"


@pytest.mark.parametrize("drop_mode", ["eof", "abort"])
def test_truncated_stream_is_502(client, token, emulator, drop_mode):
    emulator.switches.answer = "a b c d e f g h i j k l m n o p"
    emulator.switches.words_per_delta = 1
    emulator.switches.drop_after_events = 8
    emulator.switches.drop_mode = drop_mode
    response = send(client, access_token=token, prompt="Hi")
    assert response.status_code == 502
    assert response.json["code"] in ("upstream_stream_broken",)


def test_stream_failing_after_start_ends_with_error_event(client, token, emulator):
    emulator.switches.answer = "a b c d e f g h i j k l m n o p"
    emulator.switches.words_per_delta = 1
    emulator.switches.drop_after_events = 8
    response = send(client, access_token=token, prompt="Hi", stream="true")
    assert response.status_code == 200
    events = sse_events(response.get_data())
    assert events[-1][0] == "error"
    assert json.loads(events[-1][1])["code"] == "upstream_stream_broken"
    assert (None, "[DONE]") not in events


@pytest.mark.parametrize("challenge", ["turnstile_required", "arkose_required"])
def test_unsolvable_sentinel_challenge_is_a_prompt_403(client, token, emulator, challenge):
    setattr(emulator.switches, challenge, True)
    response = send(client, access_token=token, prompt="Hi", timeout="20000")
    assert response.status_code == 403 and response.json["code"] == "sentinel_required"
    assert emulator.requests_to("/conversation") == []


def test_proof_of_work_too_hard_is_403(client, token, emulator):
    emulator.switches.pow_difficulty = "000001"
    response = send(client, access_token=token, prompt="Hi")
    assert response.status_code == 403 and response.json["code"] == "pow_failed"


def test_deadline_is_504(client, token, emulator):
    emulator.switches.answer = "slow " * 20
    emulator.switches.words_per_delta = 1
    emulator.switches.chunk_delay = 0.2
    started = time.monotonic()
    response = send(client, access_token=token, prompt="Hi", timeout="600")
    assert response.status_code == 504 and response.json["code"] == "deadline_exceeded"
    assert time.monotonic() - started < 4


@pytest.mark.parametrize("root", ["/api", "/backend-api"])
def test_reverse_proxy_reaches_either_path_convention(client, token, emulator, root):
    response = send(client, access_token=token, prompt="via proxy",
                    reverse_proxy=emulator.url + root + "/conversation")
    assert response.status_code == 200, response.json
    assert response.json["text"] == "Echo: via proxy"
    assert all(r.path.startswith(root + "/") for r in emulator.requests)


def test_recorded_stream_replays_to_its_text(client, token, emulator, samples_dir):
    emulator.switches.replay_file = str(samples_dir / "delta-v1-capture.txt")
    response = send(client, access_token=token, prompt="give me a list of 10 famous people")
    assert response.status_code == 200, response.json
    assert response.json["conversation_id"] == "6974e0a3-b684-8321-a73a-bf4e7b6dfafe"
    assert response.json["parent_message_id"] == "0fe98393-5d68-4e41-9fb6-75b50f27c79e"
    assert response.json["text"].startswith("Here\u2019s a list of 10 famous people")
    assert response.json["text"].endswith("interested in learning more about?")


def test_concurrent_requests_are_served_in_parallel(live_service, token, emulator):
    from curl_cffi import requests as curl_requests
    emulator.switches.answer = "x " * 6
    emulator.switches.words_per_delta = 1
    emulator.switches.chunk_delay = 0.2
    results = []

    def one():
        with curl_requests.Session() as session:
            r = session.post(live_service.url + "/send_message", timeout=30,
                             data={"access_token": token, "prompt": "Hi"})
            results.append(r.status_code)

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [200] * 4


def test_outbound_proxy_carries_every_upstream_call(make_app, token, emulator):
    import socket
    with socket.socket() as probe:  # a port with nothing listening: the proxy is unreachable
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    client = make_app(CHATGPT_PROXY=f"http://127.0.0.1:{dead_port}").test_client()
    response = send(client, access_token=token, prompt="Hi")
    assert response.status_code == 502
    assert response.json["code"] in ("proxy_error", "upstream_unreachable")
    assert emulator.requests == []


def requirements_requests(emulator):
    """The sentinel calls that carry `p`: the 2026 prepare or the 2024 one-step call."""
    return (emulator.requests_to("/sentinel/chat-requirements/prepare")
            or emulator.requests_to("/sentinel/chat-requirements"))


def decoded_requirements_config(emulator):
    import base64
    p = requirements_requests(emulator)[-1].json["p"]
    assert p.startswith("gAAAAAC")
    return json.loads(base64.b64decode(p[7:]))


def test_proof_of_work_config_quotes_the_home_page_build(client, token, emulator, dialect):
    from tests.emulator.app import BUILD_ID
    send(client, access_token=token, prompt="Hi")
    config = decoded_requirements_config(emulator)
    assert config[6] == BUILD_ID
    if dialect == "2026":  # the 25-item config quotes the sentinel SDK's URL
        assert len(config) == 25
        assert config[5] == emulator.url + "/backend-api/sentinel/sdk.js"
    else:
        assert config[5] == ("https://cdn.oaistatic.com/assets/emulator-main.js?dpl="
                             + BUILD_ID)
    assert config[4] == requirements_requests(emulator)[-1].headers["user-agent"]
    send(client, access_token=token, prompt="again")
    home_reads = [r for r in emulator.requests if r.method == "GET" and r.path == "/"]
    assert len(home_reads) == 1  # cached between requests


def test_reverse_proxy_home_page_is_not_probed(client, token, emulator):
    from chatgpt_web.upstream.bootstrap import DEFAULT_BUILD_ID
    response = send(client, access_token=token, prompt="Hi",
                    reverse_proxy=emulator.url + "/api/conversation")
    assert response.status_code == 200
    assert decoded_requirements_config(emulator)[6] == DEFAULT_BUILD_ID
    assert not [r for r in emulator.requests if r.path == "/"]


@pytest.mark.parametrize("setting", [{"MAX_UPSTREAM_ANSWER_BYTES": "300"},
                                     {"MAX_UPSTREAM_EVENT_BYTES": "60"}])
def test_an_upstream_answer_over_the_caps_is_a_bad_answer(make_app, token, emulator, setting):
    emulator.switches.answer = "many words " * 200
    client = make_app(**setting).test_client()
    response = send(client, access_token=token, prompt="Hello")
    assert response.status_code == 502, response.json
    assert response.json["code"] == "upstream_bad_answer"
    assert send(make_app().test_client(), access_token=token, prompt="Hello").status_code == 200
