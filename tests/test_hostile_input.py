"""Hostile input on the surfaces that take files, images, links and admin edits.

One live service (on a real port, the emulator behind it) takes every case: malformed, huge,
mistyped or forged input must get a 4xx with its code in the face's envelope (`{"error": {...}}`
on /v1, `{"message", "code"}` on the form face and /admin), never a 500, and no answer or log
line may carry the API key, the admin key, the account's token, its id or the upstream URL.
Each case marked "regression" was a 500 or a wrong answer before its fix.
"""
from __future__ import annotations

import base64
import json
import logging

import openai
import pytest
import requests

from chatgpt_web.keys import key_digest
from tests.service_fixtures import LiveServer

API_KEY = "sk-hostile-client-key"
ADMIN_KEY = "admin-hostile-probe"
ACCOUNT = "acct-zq7"  # the pooled account's id: never shown to a /v1 caller
TIMEOUT = 30  # no probe may hang


@pytest.fixture(scope="module")
def service(_emulator_server, tmp_path_factory):
    """(url, secrets): one service for every case of this module."""
    from chatgpt_web import create_app
    emulator = _emulator_server
    emulator.reset()
    folder = tmp_path_factory.mktemp("hostile")
    account_token = emulator.mint_access_token()
    (folder / "accounts.json").write_text(json.dumps([{"name": ACCOUNT,
                                                       "access_token": account_token}]))
    (folder / "keys.json").write_text(json.dumps({"keys": []}))
    app = create_app({
        "CHATGPT_BASE_URL": emulator.url, "CHATGPT_AUTH_URL": emulator.url,
        "CHATGPT_ALLOWED_PROXIES": emulator.url + "/", "CACHE_DIR": str(folder / "cache"),
        "REQUEST_TIMEOUT": "30", "API_KEYS": API_KEY, "ADMIN_KEY": ADMIN_KEY,
        "KEYS_FILE": str(folder / "keys.json"), "ACCOUNTS_FILE": str(folder / "accounts.json"),
        "RATE_LIMIT_IP": "off", "MAX_UPLOAD_BYTES": "2000"})
    server = LiveServer(app)
    port = emulator.url.rsplit(":", 1)[1]
    yield server.url, (API_KEY, ADMIN_KEY, account_token, ACCOUNT, emulator.url,
                       "127.0.0.1:" + port, key_digest(API_KEY))
    server.stop()


@pytest.fixture
def call(service, caplog):
    """call(method, path, key=..., **requests options) -> the response, checked for leaks in
    the answer and in every log line written while it was served."""
    url, secrets = service

    def run(method, path, key=API_KEY, headers=None, **options):
        headers = {**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
        caplog.clear()
        with caplog.at_level(logging.DEBUG):
            response = requests.request(method, url + path, headers=headers, timeout=TIMEOUT,
                                        **options)
        assert response.status_code < 500, response.text
        logged = "\n".join(record.getMessage() for record in caplog.records
                           if record.name.startswith("chatgpt_web"))
        for secret in secrets:
            assert secret not in response.text, f"the answer shows {secret!r}"
            assert secret not in logged, f"a log line shows {secret!r}"
        return response
    return run


def openai_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    return error


def form_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code and body["message"]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def chat(call, content):
    return call("POST", "/v1/chat/completions", json={
        "model": "gpt-4o", "messages": [{"role": "user", "content": content}]})


# --- /v1/chat/completions: image_url and file parts ---------------------------------------------

def image_part(value) -> list:
    return [{"type": "text", "text": "What is it?"}, {"type": "image_url", "image_url": value}]


@pytest.mark.parametrize("value, status, code", [
    ({"url": "data:image/png;base64"}, 400, "invalid_field"),  # no comma
    ({"url": "data:image/png;base64,!!!!"}, 400, "invalid_field"),
    ({"url": "data:image/png;base64,ééé"}, 400, "invalid_field"),
    ({"url": "data:image/png;base64,"}, 400, "invalid_field"),  # empty
    ({"url": "data:image/png;base64," + "A" * 100_000}, 413, "file_too_large"),
    ({"url": "data:\x00;base64,AAAA"}, 415, "unsupported_file_type"),
    ({"url": "data:" + "a" * 100_000 + ";base64,AAAA"}, 415, "unsupported_file_type"),
    ({"url": "data:image/png,%ZZ%00"}, 415, "unsupported_file_type"),
    ({"url": "data:application/pdf;base64," + b64(b"%PDF-1.4\n%%EOF\n")}, 415,
     "unsupported_file_type"),
    ({"url": 5}, 400, "invalid_field"),
    ({"url": ["data:,x"]}, 400, "invalid_field"),
    (None, 400, "invalid_field"),
    (7, 400, "invalid_field"),
    ({"url": "ftp://example.com/a.png"}, 400, "invalid_image_url"),
    ({"url": "file:///etc/passwd"}, 400, "invalid_image_url"),
    ({"url": "http://127.0.0.1:1/a.png"}, 400, "image_url_not_allowed"),
    ({"url": "https://127.0.0.1/a.png"}, 400, "image_url_not_allowed"),
    ({"url": "https://localhost/a.png"}, 400, "image_url_not_allowed"),
    ({"url": "https://169.254.169.254/latest/meta-data"}, 400, "image_url_not_allowed"),
    ({"url": "https://[::1]/a.png"}, 400, "image_url_not_allowed"),
    ({"url": "https://user:pw@example.com/a.png"}, 400, "invalid_image_url"),
    ({"url": "https://example.com:99999/a.png"}, 400, "invalid_image_url"),
    ({"url": "https://[zz/a.png"}, 400, "invalid_image_url"),
    ({"url": "https:///a.png"}, 400, "invalid_image_url"),
    ({"url": "https://exa\x00mple.com/a.png"}, 400, "invalid_image_url"),
    ({"url": "https://no-such-host.invalid/a.png"}, 400, "invalid_image_url"),
], ids=lambda value: repr(value)[:40] if not isinstance(value, int) else None)
def test_bad_image_url_parts_are_4xx_naming_the_part(call, value, status, code):
    error = openai_error(chat(call, image_part(value)), status, code)
    assert error["param"].startswith("messages[0].content[1]")


TEXT = b"plain words, a text file\n"


@pytest.mark.parametrize("file, status, code", [
    ("not an object", 400, "invalid_field"),
    ({}, 400, "invalid_field"),
    ({"file_data": 5}, 400, "invalid_field"),
    ({"file_data": b64(TEXT), "filename": 5}, 400, "invalid_field"),
    ({"file_data": b64(TEXT), "filename": ["a.txt"]}, 400, "invalid_field"),
    ({"file_id": "file-abc"}, 400, "unsupported_content"),
    ({"file_data": b64(b"MZ\x90\x00" + b"\0" * 60), "filename": "setup.exe"}, 415,
     "unsupported_file_type"),
    ({"file_data": b64(TEXT), "filename": "../../etc/passwd"}, 415, "unsupported_file_type"),
    ({"file_data": "A" * 10_000, "filename": "big.txt"}, 413, "file_too_large"),
])
def test_bad_file_parts_are_4xx(call, file, status, code):
    openai_error(chat(call, [{"type": "text", "text": "Read"}, {"type": "file", "file": file}]),
                 status, code)


@pytest.mark.parametrize("name, sent_as", [
    # regression: a long name was cut to 200 characters, its extension with it, and the text
    # file was then refused as of no accepted type (415)
    ("n" * 5000 + ".txt", "n" * 196 + ".txt"),
    ("a\x00b\r\n.txt", "ab.txt"),  # control characters dropped
    ("C:\\Users\\x\\..\\notes.txt", "notes.txt"),  # only the last path segment
])
def test_a_file_name_is_cleaned_and_keeps_its_extension(call, name, sent_as):
    data = f"unique text for {name[:8]!r}\n".encode()  # its own bytes: not deduplicated
    response = chat(call, [{"type": "text", "text": "Read"},
                           {"type": "file", "file": {"file_data": b64(data), "filename": name}}])
    assert response.status_code == 200, response.text
    assert f"[received {sent_as} text/plain" in response.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("content, code", [
    (["text", 5], "invalid_field"),
    ([{"type": 5}], "invalid_field"),
    ([{"type": ["image_url"]}], "invalid_field"),
    ([{"text": "no type"}], "invalid_field"),
    ([{"type": "text", "text": 5}], "invalid_field"),
    ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}] * 11,
     "too_many_files"),
])
def test_bad_content_lists_are_400(call, content, code):
    openai_error(chat(call, content), 400, code)


def test_the_official_sdk_sees_the_same_errors(service):
    url, _ = service
    with openai.OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0,
                       timeout=TIMEOUT) as sdk:
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.chat.completions.create(model="gpt-4o", messages=[
                {"role": "user", "content": image_part({"url": "https://10.0.0.1/a.png"})}])
        assert caught.value.body["code"] == "image_url_not_allowed"
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.images.generate(prompt="a fox", n=9)
        assert caught.value.body["code"] == "invalid_field"


# --- https image URLs on a server the operator allowed (IMAGE_URL_ALLOW) ------------------------

@pytest.fixture(scope="module")
def allowed_images(_emulator_server, tmp_path_factory):
    """(url of a service that may fetch from a local TLS server, that server's origin, a
    ChatGPT access token); the server's redirects lead where a hostile page would send them."""
    from chatgpt_web import create_app
    from tests.test_vision import png
    from tests.tls_images import ImageServer
    emulator = _emulator_server
    folder = tmp_path_factory.mktemp("hostile-images")
    images = ImageServer(folder, {
        "/cat.png": ("image/png", png(2, 2)),
        "/vector.svg": ("image/svg+xml", b'<svg xmlns="http://www.w3.org/2000/svg">'
                                         b"<script>alert(1)</script></svg>"),
        "/page": ("text/html", b"<html></html>"),
    }, redirects={"/loop": "/loop", "/to-metadata": "https://169.254.169.254/latest",
                  "/to-http": "http://example.com/cat.png", "/to-file": "file:///etc/passwd",
                  "/to-nowhere": "", "/to-bad-ipv6": "https://[zz/cat.png"})
    app = create_app({
        "CHATGPT_BASE_URL": emulator.url, "CHATGPT_AUTH_URL": emulator.url,
        "CHATGPT_ALLOWED_PROXIES": emulator.url + "/", "CACHE_DIR": str(folder / "cache"),
        "REQUEST_TIMEOUT": "30", "RATE_LIMIT_IP": "off",
        "IMAGE_URL_ALLOW": images.url + "/", "IMAGE_URL_CA_FILE": str(images.cert_file),
        "MAX_UPLOAD_BYTES": "4096"})
    server = LiveServer(app)
    yield server.url, images.url, emulator.mint_access_token()
    server.stop()
    images.stop()


@pytest.mark.parametrize("path, status, code", [
    ("/loop", 400, "image_url_not_allowed"),  # at most MAX_REDIRECTS
    ("/to-metadata", 400, "image_url_not_allowed"),  # every hop passes the SSRF guard
    ("/to-http", 400, "image_url_not_allowed"),
    ("/to-file", 400, "invalid_image_url"),
    ("/to-nowhere", 400, "image_url_unreachable"),  # a redirect without a Location
    # regression: urljoin raised ValueError on the unbalanced bracket: a 500
    ("/to-bad-ipv6", 400, "invalid_image_url"),
    ("/vector.svg", 415, "unsupported_file_type"),  # SVG can carry script: not accepted
    ("/page", 415, "unsupported_file_type"),
])
def test_hostile_image_servers_get_a_4xx(allowed_images, path, status, code):
    service_url, images_url, token = allowed_images
    response = requests.post(service_url + "/v1/chat/completions", timeout=TIMEOUT, headers={
        "Authorization": f"Bearer {token}"}, json={"model": "gpt-4o", "messages": [
            {"role": "user", "content": image_part({"url": images_url + path})}]})
    assert openai_error(response, status, code)["param"] == "messages[0].content[1]"
    assert token not in response.text


# --- /v1/responses: input_image and input_file --------------------------------------------------

@pytest.mark.parametrize("part, code", [
    ({"type": "input_image"}, "invalid_field"),
    ({"type": "input_image", "image_url": 5}, "invalid_field"),
    ({"type": "input_image", "image_url": {"url": "x"}}, "invalid_image_url"),
    ({"type": "input_image", "file_id": "file-1"}, "unsupported_content"),
    ({"type": "input_file"}, "invalid_field"),
    ({"type": "input_file", "file_data": 5}, "invalid_field"),
    ({"type": "input_file", "file_data": b64(TEXT), "filename": {"a": 1}}, "invalid_field"),
])
def test_bad_responses_input_parts_are_400(call, part, code):
    response = call("POST", "/v1/responses", json={
        "model": "gpt-4o", "input": [{"role": "user", "content": [part]}]})
    assert openai_error(response, 400, code)["param"].startswith("input[0].content[0]")


# --- POST /v1/images/generations -----------------------------------------------------------------

@pytest.mark.parametrize("body, status, code", [
    ({"prompt": "x", "n": "2"}, 400, "invalid_field"),
    ({"prompt": "x", "n": 0}, 400, "invalid_field"),
    ({"prompt": "x", "n": 10**30}, 400, "invalid_field"),
    ({"prompt": "x", "n": 1.0}, 400, "invalid_field"),
    ({"prompt": "x", "n": True}, 400, "invalid_field"),
    ({"prompt": "x", "size": ["1024x1024"]}, 400, "invalid_field"),
    ({"prompt": "x", "size": "1x1"}, 400, "invalid_field"),
    ({"prompt": "x", "response_format": 1}, 400, "invalid_field"),
    ({"prompt": "x", "model": ["dall-e-3"]}, 404, "model_not_found"),
    ({"prompt": "x", "model": {"a": 1}}, 404, "model_not_found"),
    ({"prompt": "x", "model": "m" * 100_000}, 404, "model_not_found"),
    ({"prompt": 5}, 400, "missing_field"),
    ({"prompt": ["x"]}, 400, "missing_field"),
    ({}, 400, "missing_field"),
    ({"prompt": "x" * 1_000_000}, 400, "prompt_too_long"),
    ({"prompt": "x", "stream": True}, 400, "unsupported_parameter"),
    ([1], 400, "invalid_json"),
], ids=lambda value: repr(value)[:40])
def test_bad_image_requests_are_4xx(call, body, status, code):
    response = call("POST", "/v1/images/generations", json=body)
    error = openai_error(response, status, code)
    assert len(error["message"]) < 500  # a huge model name is not echoed whole


@pytest.mark.parametrize("raw", ["{{{", "", "null"])
def test_an_image_request_that_is_not_json_is_400(call, raw):
    response = call("POST", "/v1/images/generations", data=raw,
                    headers={"Content-Type": "application/json"})
    openai_error(response, 400, "invalid_json")


# --- POST /v1/images/edits as JSON ---------------------------------------------------------------

PNG_URL = "data:image/png;base64," + b64(b"\x89PNG\r\n\x1a\n" + bytes(8) + b"IHDR" + bytes(8))


def nested(depth: int):
    value: object = PNG_URL
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("images, status, code", [
    ([{}] * 100_000, 400, "too_many_files"),  # refused before any is looked at
    ([nested(50)], 400, "invalid_field"),
    ([{"image_url": ["https://example.com/a.png"]}], 400, "invalid_field"),
    ([{"image_url": "https://[zz/a.png"}], 400, "invalid_image_url"),
    ([{"image_url": "https://user:pw@example.com/a.png"}], 400, "invalid_image_url"),
    ([{"image_url": "https://169.254.169.254/latest"}], 400, "image_url_not_allowed"),
    ([{"image_url": "data:" + "x" * 100_000}], 400, "invalid_field"),  # no comma
    ([{"image_url": "data:image/png;base64," + "A" * 100_000}], 413, "file_too_large"),
    ([{"image_url": "data:image/png," + "%00" * 3000}], 413, "file_too_large"),
    ([{"file_id": {"id": "file-1"}}], 400, "unsupported_parameter"),
    ([{"image_url": PNG_URL, "file_id": ""}], 400, "invalid_field"),
], ids=lambda value: repr(value)[:40])
def test_bad_json_image_edits_are_4xx(call, images, status, code):
    response = call("POST", "/v1/images/edits", json={"prompt": "p", "images": images})
    error = openai_error(response, status, code)
    assert len(error["message"]) < 500  # a long URL is not echoed whole


def test_a_json_image_edit_nested_deeper_than_the_parser_goes_is_400(call):
    raw = '{"prompt": "p", "images": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = call("POST", "/v1/images/edits", data=raw,
                    headers={"Content-Type": "application/json"})
    openai_error(response, 400, "invalid_json")


# --- GET /v1/files/<id>/content: signed links ----------------------------------------------------

LINK_ID = "img-" + "0" * 32


@pytest.mark.parametrize("path", [
    "img-x/content",
    f"{LINK_ID}/content",  # no signature
    f"{LINK_ID}/content?expires=99999999999&sig=00",  # forged
    f"{LINK_ID}/content?expires=-1&sig=00",
    f"{LINK_ID}/content?expires=1&expires=2&sig=00",
    f"{LINK_ID}/content?expires={'9' * 40}&sig=00",
    f"{LINK_ID}/content?expires=%D9%A1%D9%A2&sig=00",  # Arabic-Indic digits
    # regression: "²" is a digit to str.isdigit() but not to int(): a 500
    f"{LINK_ID}/content?expires=%C2%B2&sig=00",
    f"{LINK_ID}/content?expires=1&sig=%FF%FE",
    f"{LINK_ID.upper()}/content?expires=1&sig=00",
])
def test_forged_or_malformed_file_links_are_403(call, path):
    response = call("GET", "/v1/files/" + path, key=None)
    openai_error(response, 403, "invalid_signature")


def test_a_path_trick_is_not_a_file_link(call):
    response = call("GET", "/v1/files/..%2F..%2Fetc%2Fpasswd/content", key=None)
    assert response.status_code in (401, 404)
    assert "error" in response.json()


# --- /admin/keys ---------------------------------------------------------------------------------

@pytest.mark.parametrize("fields", [
    {},  # no id
    {"id": 5}, {"id": "a" * 65}, {"id": "../x"}, {"id": ""},
    {"id": "abc\n"},  # regression: "$" let a final newline into an id
    {"id": "k", "models": "gpt-4o"}, {"id": "k", "models": [1]}, {"id": "k", "models": [["x"]]},
    {"id": "k", "models": ["m"] * 100_000}, {"id": "k", "models": ["m" * 201]},
    {"id": "k", "ips": ["300.1.1.1/8"]}, {"id": "k", "ips": "10.0.0.0/8"},
    {"id": "k", "ips": [5]}, {"id": "k", "ips": ["10.0.0.0/99"]},
    {"id": "k", "backends": ["nope"]}, {"id": "k", "backends": "web"},
    {"id": "k", "quota": "100/day"}, {"id": "k", "quota": {"requests": "x/day"}},
    {"id": "k", "quota": {"requests": "-1/day"}}, {"id": "k", "quota": {"coins": "1/day"}},
    {"id": "k", "quota": {"requests": "0/day"}}, {"id": "k", "quota": {"tokens": "00/month"}},
    {"id": "k", "quota": {"requests": [["1/day"]]}},
    # regression: a 5000-digit number made int() raise ValueError: a 500
    {"id": "k", "quota": {"requests": "9" * 5000 + "/day"}},
    {"id": "k", "rate": "9" * 5000 + "/hour"}, {"id": "k", "rate": 5},
    {"id": "k", "concurrency": 0}, {"id": "k", "concurrency": 1.5},
    {"id": "k", "concurrency": True}, {"id": "k", "disabled": "yes"},
    {"id": "k", "expires_at": "tomorrow"}, {"id": "k", "expires_at": 10**20},
    # regression: the offset moves the time out of datetime's range (OverflowError): a 500
    {"id": "k", "expires_at": "0001-01-01T00:00:00+14:00"},
    {"id": "k", "expires_at": "9999-12-31T23:59:59-14:00"},
    {"id": "k", "label": "l" * 201}, {"id": "k", "label": 5},
    {"id": "k", "hash": "sha256:00"}, {"id": "k", "unknown": 1},
], ids=lambda fields: repr(fields)[:50])
def test_bad_key_fields_are_400_invalid_key_policy(call, fields):
    response = call("POST", "/admin/keys", key=ADMIN_KEY, json=fields)
    form_error(response, 400, "invalid_key_policy")
    assert len(response.json()["message"]) < 300


@pytest.mark.parametrize("raw", ["{", "[]", "5", ""])
def test_a_key_body_that_is_not_an_object_is_400(call, raw):
    response = call("POST", "/admin/keys", key=ADMIN_KEY, data=raw,
                    headers={"Content-Type": "application/json"})
    form_error(response, 400, "invalid_key_policy")


def test_key_edits_are_checked_as_new_keys_are(call):
    created = call("POST", "/admin/keys", key=ADMIN_KEY, json={"id": "edit-me"})
    assert created.status_code == 201
    for fields, code in [({"models": 5}, "invalid_key_policy"),
                         ({"ips": ["x"]}, "invalid_key_policy"),
                         ({"expires_at": "0001-01-01T00:00:00+14:00"}, "invalid_key_policy"),
                         ({"id": "other"}, "invalid_key_policy"),
                         ({"hash": "sha256:" + "0" * 64}, "invalid_key_policy"),
                         ({"key": "sk-x"}, "invalid_key_policy")]:
        form_error(call("PATCH", "/admin/keys/edit-me", key=ADMIN_KEY, json=fields), 400, code)
    form_error(call("PATCH", "/admin/keys/nope", key=ADMIN_KEY, json={"label": "x"}), 404,
               "key_not_found")
    gone = call("DELETE", "/admin/keys/" + "x" * 5000, key=ADMIN_KEY)
    form_error(gone, 404, "key_not_found")
    assert len(gone.json()["message"]) < 200  # regression: the whole path was echoed back
    assert call("DELETE", "/admin/keys/edit-me", key=ADMIN_KEY).status_code == 200


def test_the_admin_apis_need_the_admin_key(call):
    for method, path in [("GET", "/admin/keys"), ("POST", "/admin/keys"),
                         ("GET", "/admin/usage"), ("POST", f"/admin/accounts/{ACCOUNT}/disable")]:
        for key in (None, API_KEY, ADMIN_KEY + "x"):
            assert call(method, path, key=key).status_code in (401, 403)


# --- /admin/usage and /admin/accounts ------------------------------------------------------------

@pytest.mark.parametrize("query", [
    "from=x", "to=2026-13-01", "from=2026-12-05&to=2026-01-01", "from=0001-01-01&to=9999-12-31",
    "from=9999-12-31", "from=2026-12-04T00:00", "from=%00", "to=%2B2026-12-04",
])
def test_bad_usage_ranges_are_400(call, query):
    form_error(call("GET", "/admin/usage?" + query, key=ADMIN_KEY), 400, "invalid_request")


@pytest.mark.parametrize("query", ["key=" + "k" * 10_000, "format=xml", "format=csv&key=%00"])
def test_odd_usage_filters_answer_an_empty_or_full_report(call, query):
    assert call("GET", "/admin/usage?" + query, key=ADMIN_KEY).status_code == 200


@pytest.mark.parametrize("path", ["nope/check", "nope/disable", "%00/enable",
                                  "x" * 5000 + "/check"])
def test_unknown_accounts_are_404(call, path):
    form_error(call("POST", "/admin/accounts/" + path, key=ADMIN_KEY), 404, "account_not_found")


# --- /v1/key -------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, code", [(None, "missing_api_key"),
                                       ("sk-not-a-key", "invalid_api_key"),
                                       (API_KEY + "x", "invalid_api_key")])
def test_v1_key_without_a_valid_key_is_401(call, key, code):
    openai_error(call("GET", "/v1/key", key=key), 401, code)


# --- /send_message multipart files ---------------------------------------------------------------

@pytest.mark.parametrize("files, status, code", [
    ([("file", ("a.txt", b"", "text/plain"))], 400, "invalid_field"),
    ([("file", ("a.txt", b"hello", "text/plain"))] * 11, 400, "too_many_files"),
    ([("file", ("a.txt", b"hello", "text/plain"))] * 200, 400, "too_many_files"),
    ([("file", ("a.txt", b"x" * 5000, "text/plain"))], 413, "file_too_large"),
    ([("file", ("a.exe", b"MZ\x90\x00" + b"\0" * 60, "application/octet-stream"))], 415,
     "unsupported_file_type"),
    ([("file", ("a.bin", b"\0\1\2\3", "\x00/\x00"))], 415, "unsupported_file_type"),
])
def test_bad_form_files_are_4xx_in_the_form_envelope(call, files, status, code):
    response = call("POST", "/send_message", data={"prompt": "Read"}, files=files)
    form_error(response, status, code)


def test_a_form_file_with_a_huge_name_keeps_its_extension(call):
    response = call("POST", "/send_message", data={"prompt": "Read"}, files=[
        ("file", ("f" * 100_000 + ".txt", b"form text, its own bytes\n", "text/plain"))])
    assert response.status_code == 200, response.text
    assert "f" * 196 + ".txt text/plain" in response.json()["text"]


# --- what the account's blob store answers is bounded too ----------------------------------------

@pytest.mark.parametrize("error_bytes, code", [
    (100, "upstream_error"),
    # regression: the whole answer was read into memory before the first 256 kB were kept
    (2_000_000, "upstream_bad_answer"),
])
def test_a_blob_store_refusal_is_read_only_up_to_its_bound(live_service, token, emulator,
                                                           error_bytes, code):
    emulator.files.blob_error_bytes = error_bytes
    response = requests.post(live_service.url + "/v1/chat/completions", timeout=TIMEOUT,
                             headers={"Authorization": f"Bearer {token}"}, json={
                                 "model": "gpt-4o", "messages": [{"role": "user", "content": [
                                     {"type": "file", "file": {"file_data": b64(TEXT),
                                                               "filename": "a.txt"}}]}]})
    assert openai_error(response, 502, code)
    assert token not in response.text and emulator.url not in response.text
