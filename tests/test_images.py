"""Image generation on the web accounts, through the official `openai` SDK over real HTTP.

The emulator draws a deterministic PNG for each image turn (tests/emulator/images.py), hands the
turn off as the site does, and serves the bytes only through its download endpoints. The service
must wait for the image, read it back, and give it either inline (`b64_json`) or as a signed link
to itself (`url`) that says nothing about the account or the site.
"""
import base64
import json
import re
import time
from urllib.parse import parse_qs, urlsplit

import openai
import pytest
from curl_cffi import requests as curl_requests

from chatgpt_web.errors import Forbidden, UpstreamError
from chatgpt_web.image_links import ImageLinks, ImageSource
from chatgpt_web.store import MemoryStore
from chatgpt_web.upstream.downloads import AssetPointer, content_type_of
from chatgpt_web.upstream.stream import StreamReducer, iter_sse
from tests.emulator.images import tiny_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
LINK = re.compile(r"!\[image\]\((http://[^)]+)\)")


def drawn(emulator) -> list[bytes]:
    """The PNGs the emulator drew, in order."""
    return [stored.data for stored in emulator.files.generated()]


def get(url: str, **headers):
    return curl_requests.get(url, headers=headers, timeout=30)


def writes(emulator) -> list[dict]:
    return [r.json for r in emulator.requests_to("/f/conversation") if r.method == "POST"]


# --- POST /v1/images/generations ---------------------------------------------------------------

def test_b64_json_answers_the_png_the_account_drew(sdk, emulator):
    answer = sdk.images.generate(model="gpt-image-1", prompt="a red fox in the snow",
                                 response_format="b64_json")
    assert isinstance(answer.created, int) and len(answer.data) == 1
    image = base64.b64decode(answer.data[0].b64_json)
    assert image.startswith(PNG_SIGNATURE)
    assert [image] == drawn(emulator)
    assert answer.data[0].revised_prompt == "a red fox in the snow"
    # One image turn in the web app's image mode, handed off and read from its WebSocket topic,
    # then the download.
    (write,) = writes(emulator)
    assert write["system_hints"] == ["picture_v2"]
    assert write["messages"][0]["content"]["parts"] == ["a red fox in the snow"]
    assert emulator.topics.subscriptions and not emulator.requests_to("/f/conversation/resume")
    assert emulator.requests_to("/estuary/content")


def test_url_serves_the_same_bytes_and_names_nothing_upstream(sdk, emulator, live_service, token):
    answer = sdk.images.generate(model="dall-e-3", prompt="a lighthouse", response_format="url")
    url = answer.data[0].url
    assert url.startswith(live_service.url + "/v1/files/img-")
    response = get(url)  # no credential: the signature is enough (an <img> tag sends none)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "image/png"
    assert [response.content] == drawn(emulator)
    (write,) = writes(emulator)
    conversation_id = emulator.conversations.listed(emulator_owner(emulator, token))[0].id
    file_id = emulator.files.generated()[0].file_id
    for secret in (token, emulator.url, "127.0.0.1:" + emulator.url.rsplit(":", 1)[1],
                   conversation_id, file_id, "sediment", "estuary", "chatgpt"):
        assert secret not in url


def emulator_owner(emulator, token: str) -> str:
    from tests.emulator import tokens
    return tokens.user_id(tokens.verify(emulator.secret, token))


def test_links_name_public_url_when_it_is_set(live_service_factory, emulator, token):
    service = live_service_factory(PUBLIC_URL="https://chat.example.com/")
    with openai.OpenAI(base_url=service.url + "/v1", api_key=token, max_retries=0,
                       timeout=60) as client:
        url = client.images.generate(model="dall-e-3", prompt="p").data[0].url
    assert url.startswith("https://chat.example.com/v1/files/img-")
    assert [get(service.url + url[len("https://chat.example.com"):]).content] == drawn(emulator)


def test_dall_e_answers_links_and_gpt_image_base64_by_default(sdk, emulator):
    assert sdk.images.generate(model="dall-e-3", prompt="p").data[0].url
    assert sdk.images.generate(model="gpt-image-1", prompt="p").data[0].b64_json


def test_n_images_are_n_turns(sdk, emulator):
    answer = sdk.images.generate(model="gpt-image-1", prompt="two owls", n=2)
    images = [base64.b64decode(item.b64_json) for item in answer.data]
    assert images == drawn(emulator) and images[0] != images[1]
    assert len(writes(emulator)) == 2


def test_a_size_other_than_square_is_asked_for_in_the_prompt(sdk, emulator):
    sdk.images.generate(model="gpt-image-1", prompt="a tall tower", size="1024x1536")
    (write,) = writes(emulator)
    assert write["messages"][0]["content"]["parts"][0].startswith("a tall tower\n\n")
    assert "portrait" in write["messages"][0]["content"]["parts"][0]


def test_older_file_service_pointers_use_the_legacy_download(sdk, emulator):
    emulator.images.scheme = "file-service"
    answer = sdk.images.generate(model="gpt-image-1", prompt="an old map")
    assert [base64.b64decode(answer.data[0].b64_json)] == drawn(emulator)
    assert [r.path for r in emulator.requests if "/download" in r.path][0].endswith("/download")
    assert not emulator.requests_to("/files/download/" + emulator.files.generated()[0].file_id)


def test_the_image_is_found_by_polling_when_the_resume_fails(sdk, emulator):
    emulator.switches.handoff = "poll"
    answer = sdk.images.generate(model="gpt-image-1", prompt="a cactus")
    assert [base64.b64decode(answer.data[0].b64_json)] == drawn(emulator)
    assert [r for r in emulator.requests if r.method == "GET" and "/conversation/" in r.path]


@pytest.mark.parametrize("body, param", [
    ({"model": "gpt-image-1"}, "prompt"),
    ({"model": "gpt-image-1", "prompt": "   "}, "prompt"),
    ({"model": "gpt-image-1", "prompt": "p", "n": 9}, "n"),
    ({"model": "gpt-image-1", "prompt": "p", "n": "2"}, "n"),
    ({"model": "gpt-image-1", "prompt": "p", "size": "3x3"}, "size"),
    ({"model": "gpt-image-1", "prompt": "p", "response_format": "png"}, "response_format"),
    ({"model": "gpt-image-1", "prompt": "p", "stream": True}, "stream"),
    # A string is not a boolean: "true" was taken as "not streamed".
    ({"model": "gpt-image-1", "prompt": "p", "stream": "true"}, "stream"),
])
def test_bad_parameters_are_400_before_any_turn(sdk, emulator, body, param):
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.post("/images/generations", body=body, cast_to=object)
    assert raised.value.body["param"] == param
    assert not writes(emulator)


def test_an_unknown_model_is_404(sdk, emulator):
    with pytest.raises(openai.NotFoundError) as raised:
        sdk.images.generate(model="midjourney-9", prompt="p")
    assert raised.value.code == "model_not_found"
    assert not writes(emulator)


def test_no_token_is_401(live_service, emulator):
    response = curl_requests.post(live_service.url + "/v1/images/generations",
                                  json={"model": "gpt-image-1", "prompt": "p"}, timeout=30)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "missing_token"
    assert not writes(emulator)


# --- the signed links -------------------------------------------------------------------------

def test_forged_and_altered_links_are_refused(sdk, emulator):
    url = sdk.images.generate(model="gpt-image-1", prompt="p", response_format="url").data[0].url
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    later = int(query["expires"][0]) + 3600
    for bad in (f"{base}?expires={query['expires'][0]}&sig={'0' * 64}",
                f"{base}?expires={later}&sig={query['sig'][0]}",
                f"{base}?expires={query['expires'][0]}", base):
        response = get(bad)
        assert response.status_code == 403
        assert response.json()["error"]["code"] == "invalid_signature"
    other = url.replace(parts.path.split("/")[3], "img-" + "0" * 32)
    assert get(other).status_code == 403  # the signature covers the id


def test_expired_and_unknown_links(live_service_factory, emulator):
    service = live_service_factory(IMAGE_LINK_SECRET="a-test-secret")
    links = ImageLinks(MemoryStore(), "a-test-secret", ttl=60)
    source = ImageSource("sediment://file_0", "c", access_token="t")
    expired = get(service.url + links.issue(source, now=time.time() - 3600))
    assert expired.status_code == 403
    assert expired.json()["error"]["code"] == "link_expired"
    # Signed with the right secret, but the service never issued it: nothing stored.
    unknown = get(service.url + links.issue(source))
    assert unknown.status_code == 404
    assert unknown.json()["error"] == {"message": "this file is no longer available",
                                       "type": "not_found_error", "param": None,
                                       "code": "file_not_found"}


def test_links_need_no_api_key_where_everything_else_does(live_service_factory, emulator,
                                                          tmp_path):
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([{"id": "pooled-account", "access_token":
                                     emulator.mint_access_token()}]))
    service = live_service_factory(API_KEYS="client-key", ACCOUNTS_FILE=str(accounts),
                                   RATE_LIMIT="off", RATE_LIMIT_IP="off")
    with openai.OpenAI(base_url=service.url + "/v1", api_key="client-key",
                       max_retries=0, timeout=60) as client:
        url = client.images.generate(model="dall-e-3", prompt="a pooled picture").data[0].url
    assert "client-key" not in url and "pooled-account" not in url
    assert [get(url).content] == drawn(emulator)
    assert get(service.url + "/v1/models").status_code == 401


@pytest.mark.parametrize("endpoint", ["generations", "edits"])
def test_scoped_keys_apply_to_web_images(live_service_factory, emulator, tmp_path, endpoint):
    from chatgpt_web.keys import key_digest
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([{"id": "a1", "access_token":
                                     emulator.mint_access_token()}]))
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [
        {"hash": "sha256:" + key_digest("sk-web-images"), "id": "web",
         "backends": ["web"], "models": ["gpt-image-1"]},
        {"hash": "sha256:" + key_digest("sk-relay-only"), "id": "relay",
         "backends": ["relay"]}]}))
    service = live_service_factory(KEYS_FILE=str(keys), ACCOUNTS_FILE=str(accounts),
                                   RATE_LIMIT_IP="off")

    def generate(key, model):
        with openai.OpenAI(base_url=service.url + "/v1", api_key=key, max_retries=0,
                           timeout=60) as client:
            if endpoint == "edits":  # multipart: the model is read from the form
                return client.images.edit(model=model, image=("p.png", tiny_png(b"p")),
                                          prompt="a scoped picture")
            return client.images.generate(model=model, prompt="a scoped picture")

    assert generate("sk-web-images", "gpt-image-1").data[0].b64_json
    for key, model, code in (("sk-web-images", "dall-e-3", "model_not_allowed"),
                             ("sk-relay-only", "gpt-image-1", "backend_not_allowed")):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            generate(key, model)
        assert refused.value.code == code
    assert len(writes(emulator)) == 1
    usage = get(service.url + "/v1/key", Authorization="Bearer sk-web-images").json()
    assert usage["usage"]["day"]["requests"]["used"] == 1  # the answered request was counted


def test_an_answer_without_an_image_is_502_with_the_models_words(sdk, emulator):
    emulator.images.refusal = "I can't draw that."
    with pytest.raises(openai.APIStatusError) as failed:
        sdk.images.generate(model="gpt-image-1", prompt="something forbidden")
    assert failed.value.status_code == 502
    assert failed.value.code == "image_not_generated"
    assert "I can't draw that." in failed.value.message
    assert failed.value.response.headers["x-should-retry"] == "false"


def test_an_image_over_max_image_bytes_is_refused(live_service_factory, emulator, token):
    service = live_service_factory(MAX_IMAGE_BYTES="50")
    with openai.OpenAI(base_url=service.url + "/v1", api_key=token, max_retries=0,
                       timeout=60) as client:
        with pytest.raises(openai.APIStatusError) as failed:
            client.images.generate(model="gpt-image-1", prompt="too big")
    assert failed.value.status_code == 502 and failed.value.code == "upstream_bad_answer"


@pytest.mark.parametrize("download_url", [
    "http://169.254.169.254/latest/meta-data/",
    "https://files.example.net/image.png",
    "http://evil.oaiusercontent.com/x.png",
])
def test_a_download_url_off_the_upstream_is_never_fetched(sdk, emulator, download_url):
    emulator.images.download_url = download_url
    with pytest.raises(openai.APIStatusError) as failed:
        sdk.images.generate(model="gpt-image-1", prompt="p")
    assert failed.value.status_code == 502 and failed.value.code == "upstream_bad_answer"
    assert not emulator.requests_to("/estuary/content")


# --- chat: the model draws -------------------------------------------------------------------

def test_chat_answer_carries_the_image_as_a_markdown_link(sdk, emulator):
    completion = sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Draw a small green frog"}])
    content = completion.choices[0].message.content
    (url,) = LINK.findall(content)
    assert content == f"![image]({url})"
    assert [get(url).content] == drawn(emulator)


def test_streamed_chat_answer_ends_with_the_image_link(sdk, emulator):
    stream = sdk.chat.completions.create(
        model="gpt-4o", stream=True,
        messages=[{"role": "user", "content": "Draw a blue whale"}])
    content = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    (url,) = LINK.findall(content)
    assert [get(url).content] == drawn(emulator)


def test_send_message_gives_the_link_too(live_service, emulator, token):
    response = curl_requests.post(live_service.url + "/send_message",
                                  data={"prompt": "Draw a kite", "access_token": token},
                                  timeout=60)
    assert response.status_code == 200, response.text
    (url,) = LINK.findall(response.json()["text"])
    assert [get(url).content] == drawn(emulator)


def test_responses_api_gives_the_link_plain_and_streamed(sdk, emulator):
    response = sdk.responses.create(model="gpt-4o", input="Draw a paper boat")
    (url,) = LINK.findall(response.output_text)
    assert response.output_text == f"![image]({url})"
    stream = sdk.responses.create(model="gpt-4o", input="Draw a paper plane", stream=True)
    deltas = "".join(event.delta for event in stream
                     if event.type == "response.output_text.delta")
    (streamed,) = LINK.findall(deltas)
    assert [get(url).content, get(streamed).content] == drawn(emulator)


def test_plain_chat_has_no_image(sdk, emulator):
    completion = sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Hello"}])
    assert completion.choices[0].message.content == "Echo: Hello"
    assert not drawn(emulator)


def test_an_image_after_text_follows_it(sdk, emulator):
    emulator.images.caption = "Here is your frog."
    completion = sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Draw a frog"}])
    content = completion.choices[0].message.content
    (url,) = LINK.findall(content)
    assert content == f"Here is your frog.\n\n![image]({url})"


def test_a_captioned_image_is_found_by_polling_too(sdk, emulator):
    emulator.switches.handoff = "poll"
    emulator.images.caption = "Done."
    completion = sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "Draw a frog"}])
    (url,) = LINK.findall(completion.choices[0].message.content)
    assert completion.choices[0].message.content == f"Done.\n\n![image]({url})"
    assert [get(url).content] == drawn(emulator)


# --- pieces without a server ------------------------------------------------------------------

def test_asset_pointers_parse_only_known_schemes_and_plain_ids():
    assert AssetPointer.parse("sediment://file_00000000abc") == AssetPointer("sediment",
                                                                            "file_00000000abc")
    assert str(AssetPointer.parse("file-service://file-Ab12")) == "file-service://file-Ab12"
    for bad in ("https://x/file", "sediment://", "sediment://../etc", "sediment://a?b=c", None, 3):
        assert AssetPointer.parse(bad) is None


def test_the_emulator_png_is_valid_and_deterministic():
    png = tiny_png(b"seed")
    assert png == tiny_png(b"seed") != tiny_png(b"other")
    assert content_type_of(png) == "image/png"
    assert content_type_of(b"<html>") == "application/octet-stream"


def test_a_link_opens_only_with_the_secret_that_signed_it():
    store = MemoryStore()
    source = ImageSource("sediment://file_1", "conv", access_token="secret-token")
    path = ImageLinks(store, "one", ttl=60).issue(source)
    link_id, query = path.split("/")[3], parse_qs(urlsplit(path).query)
    assert ImageLinks(store, "one", ttl=60).open(
        link_id, query["expires"][0], query["sig"][0]) == source
    with pytest.raises(Forbidden):
        ImageLinks(store, "two", ttl=60).open(link_id, query["expires"][0], query["sig"][0])
    # The Store holds neither the token nor the pointer in clear.
    stored = json.dumps(store._data)
    assert "secret-token" not in stored and "file_1" not in stored and link_id not in stored


# --- the stream reducer, without a server -----------------------------------------------------

def _sse(*payloads) -> list[bytes]:
    return [f"data: {json.dumps(payload)}\n\n".encode() for payload in payloads] + [
        b"data: [DONE]\n\n"]


def _reduce(chunks):
    reducer = StreamReducer()
    text = "".join(delta.text for event in iter_sse(chunks) for delta in reducer.feed(event))
    return text, reducer.result()


def _tool_message(pointer, status="in_progress"):
    return {"id": "tool-1", "author": {"role": "tool", "name": "t2uay3k.sj1i4kz"},
            "content": {"content_type": "multimodal_text", "parts": [
                {"content_type": "image_asset_pointer", "asset_pointer": pointer,
                 "width": 8, "height": 8}]},
            "status": status, "recipient": "all", "channel": None}


def test_the_reducer_collects_a_pointer_that_arrives_by_replace():
    text, completion = _reduce(_sse(
        {"v": {"message": _tool_message(None), "conversation_id": "c1"}, "c": 0},
        {"p": "/message/content/parts/0/asset_pointer", "o": "replace",
         "v": "sediment://file_abc"},
        {"p": "", "o": "patch", "v": [
            {"p": "/message/status", "o": "replace", "v": "finished_successfully"}]}))
    assert text == "" and completion.text == ""
    assert completion.images == ("sediment://file_abc",)
    assert completion.message_id == "tool-1" and completion.conversation_id == "c1"


def test_the_users_own_images_are_not_the_answers():
    user = {**_tool_message("sediment://file_mine"), "id": "u1", "author": {"role": "user"}}
    answer = {"id": "a1", "author": {"role": "assistant"}, "status": "finished_successfully",
              "end_turn": True, "content": {"content_type": "text", "parts": ["A cat."]},
              "recipient": "all"}
    text, completion = _reduce(_sse(
        {"message": user, "conversation_id": "c1"},
        {"type": "input_message", "input_message": user, "conversation_id": "c1"},
        {"message": answer, "conversation_id": "c1"}))
    assert text == "A cat." and completion.images == ()


def test_a_turn_with_neither_text_nor_image_is_still_broken():
    with pytest.raises(UpstreamError):
        _reduce(_sse({"type": "title_generation", "title": "t", "conversation_id": "c1"}))
