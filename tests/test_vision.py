"""Images and files sent through the official SDK reach the account as uploads (docs/files.md).

The emulator stores what is PUT to its blob sink and its model answers with the name, type,
size and SHA-256 of every file the message points at, so these tests see the real bytes travel:
caller -> service -> account's file store -> the message.
"""
from __future__ import annotations

import base64
import hashlib
import struct
import zlib

import openai
import pytest

BOTH_DIALECTS = True


def png(width: int, height: int, shade: int = 0) -> bytes:
    """A real PNG of `width` x `height` grey pixels of `shade`."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    rows = b"".join(b"\0" + bytes([shade]) * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0,
                                                              0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


PDF = b"%PDF-1.4\n1 0 obj<</Type/Catalog>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode()


def image_message(text: str, url: str) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": text},
                                        {"type": "image_url", "image_url": {"url": url}}]}


def received(data: bytes) -> str:
    """What the emulated model says about a file it received."""
    return f"{len(data)} bytes sha256={hashlib.sha256(data).hexdigest()}"


def writes(emulator) -> list[dict]:
    return [r.json for r in emulator.requests_to("/conversation") if r.method == "POST"]


def uploads_started(emulator) -> int:
    return len([r for r in emulator.requests_to("/files") if r.method == "POST"])


@pytest.fixture
def sdk(live_service, token):
    with openai.OpenAI(base_url=live_service.url + "/v1", api_key=token, max_retries=0,
                       timeout=30) as client:
        yield client


def test_a_data_url_image_is_uploaded_and_sent_as_multimodal_text(sdk, emulator, dialect):
    image = png(3, 2, shade=200)
    answer = sdk.chat.completions.create(model="gpt-4o", messages=[
        image_message("What is in this picture?", data_url(image))])
    text = answer.choices[0].message.content
    assert text.startswith("Echo: What is in this picture?")
    assert received(image) in text and "image/png" in text

    message = writes(emulator)[-1]["messages"][-1]
    assert message["content"]["content_type"] == "multimodal_text"
    pointer, prompt = message["content"]["parts"]
    assert prompt == "What is in this picture?"
    assert (pointer["content_type"], pointer["size_bytes"], pointer["width"],
            pointer["height"]) == ("image_asset_pointer", len(image), 3, 2)
    scheme = "sediment://file_" if dialect == "2026" else "file-service://file-"
    assert pointer["asset_pointer"].startswith(scheme)
    attachment, = message["metadata"]["attachments"]
    assert attachment == {"id": pointer["asset_pointer"].split("://")[1], "name": "image.png",
                          "size": len(image), "mime_type": "image/png", "width": 3, "height": 2}
    blob_put, = [r for r in emulator.requests if r.method == "PUT"]
    assert blob_put.body == image
    assert (blob_put.headers["x-ms-blob-type"], blob_put.headers["x-ms-version"]) == (
        "BlockBlob", "2020-04-08")


def test_the_file_is_created_put_confirmed_and_processed_before_the_write(sdk, emulator):
    sdk.chat.completions.create(model="gpt-4o", messages=[
        image_message("Look", data_url(png(1, 1)))])
    paths = [r.path for r in emulator.requests
             if "/files" in r.path or "/blob/" in r.path or r.path.endswith("/conversation")]
    assert paths[0] == "/backend-api/files" and paths[1].startswith("/blob/")
    assert paths[2].endswith("/uploaded")
    # The 2026 site answers the processing stream; a 2024 mirror 404s it, which is no error.
    assert paths[3:] == ["/backend-api/files/process_upload_stream", paths[-1]]
    assert paths[-1].endswith("/conversation")


def test_resending_the_same_image_every_turn_uploads_it_once(sdk, emulator):
    image = png(4, 4, shade=9)
    history = [image_message("Describe it", data_url(image))]
    first = sdk.chat.completions.create(model="gpt-4o", messages=history)
    history += [{"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "And the colours?"}]
    second = sdk.chat.completions.create(model="gpt-4o", messages=history)
    assert second.choices[0].message.content == "Echo: And the colours?"
    # The chat was continued: only the new message went upstream, without the image.
    assert [m["content"]["parts"] for m in writes(emulator)[-1]["messages"]] == [
        ["And the colours?"]]
    # A new chat with the same image: the account already has it.
    third = sdk.chat.completions.create(model="gpt-4o", messages=[
        image_message("Again", data_url(image))])
    assert received(image) in third.choices[0].message.content
    assert uploads_started(emulator) == 1


def test_a_pdf_file_part_is_an_attachment_of_a_text_message(sdk, emulator):
    answer = sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
        {"type": "text", "text": "Summarise"},
        {"type": "file", "file": {"file_data": data_url(PDF, "application/pdf"),
                                  "filename": "report.pdf"}}]}])
    assert received(PDF) in answer.choices[0].message.content
    message = writes(emulator)[-1]["messages"][-1]
    assert message["content"] == {"content_type": "text", "parts": ["Summarise"]}
    attachment, = message["metadata"]["attachments"]
    assert (attachment["name"], attachment["mime_type"], attachment["size"]) == (
        "report.pdf", "application/pdf", len(PDF))
    created = [r.json for r in emulator.requests_to("/files") if r.method == "POST"]
    assert created[0]["use_case"] == "my_files"


def test_send_message_takes_multipart_files_with_the_prompt(client, token, emulator):
    import io
    image, document = png(2, 5, shade=1), PDF
    response = client.post("/send_message", content_type="multipart/form-data", data={
        "prompt": "Compare", "access_token": token,
        "file": [(io.BytesIO(image), "chart.png", "image/png"),
                 (io.BytesIO(document), "notes.pdf", "application/pdf")]})
    assert response.status_code == 200, response.json
    text = response.json["text"]
    assert received(image) in text and received(document) in text
    message = writes(emulator)[-1]["messages"][-1]
    assert message["content"]["content_type"] == "multimodal_text"
    assert [a["name"] for a in message["metadata"]["attachments"]] == ["chart.png", "notes.pdf"]


def test_a_file_over_max_upload_bytes_is_413_before_any_upload(live_service_factory, token,
                                                              emulator):
    service = live_service_factory(MAX_UPLOAD_BYTES="100")
    with openai.OpenAI(base_url=service.url + "/v1", api_key=token, max_retries=0) as sdk:
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.chat.completions.create(model="gpt-4o", messages=[
                image_message("Big", data_url(png(40, 40, shade=7) + b"\0" * 200))])
    assert caught.value.status_code == 413
    assert caught.value.body["code"] == "file_too_large"
    assert emulator.requests_to("/files") == [] and writes(emulator) == []


@pytest.mark.parametrize("url", [
    data_url(b"MZ\x90\0 this is a program, not a picture"),  # labelled image/png
    data_url(PDF, "application/pdf"),  # an image_url part takes images only
])
def test_bytes_that_are_not_an_accepted_image_are_415(sdk, emulator, url):
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=[image_message("What?", url)])
    assert caught.value.status_code == 415
    assert caught.value.body["code"] == "unsupported_file_type"
    assert caught.value.body["param"] == "messages[0].content[1]"
    assert emulator.requests_to("/files") == []


def test_the_accounts_own_list_of_accepted_types_is_obeyed(sdk, emulator):
    emulator.files.accepted_types = ("image/jpeg", "application/pdf")
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=[
            image_message("Png?", data_url(png(1, 1)))])
    assert caught.value.status_code == 415
    assert emulator.requests_to("/models") and emulator.requests_to("/files") == []
    # A type the account lists goes through.
    answer = sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
        {"type": "file", "file": {"file_data": base64.b64encode(PDF).decode(),
                                  "filename": "a.pdf"}}]}])
    assert received(PDF) in answer.choices[0].message.content


def test_responses_input_image_and_input_file_are_uploaded_too(sdk, emulator):
    image = png(6, 1)
    response = sdk.responses.create(model="gpt-4o", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "Both"},
        {"type": "input_image", "image_url": data_url(image)},
        {"type": "input_file", "file_data": data_url(PDF, "application/pdf"),
         "filename": "b.pdf"}]}])
    assert received(image) in response.output_text and received(PDF) in response.output_text


# --- image URLs: fetched through the SSRF guard ----------------------------------------------

CAT = png(5, 3, shade=77)


@pytest.fixture(scope="module")
def image_server(tmp_path_factory):
    from tests.tls_images import ImageServer
    server = ImageServer(tmp_path_factory.mktemp("tls"), {
        "/cat.png": ("image/png", CAT),
        "/page": ("text/html", b"<html>not an image</html>"),
        "/big.png": ("image/png", CAT + b"\0" * 5000),
    })
    yield server
    server.stop()


@pytest.fixture
def allowed_sdk(live_service_factory, token, image_server):
    """A service that may fetch from the local TLS image server (and trusts its certificate)."""
    service = live_service_factory(IMAGE_URL_ALLOW=image_server.url + "/",
                                   IMAGE_URL_CA_FILE=str(image_server.cert_file),
                                   MAX_UPLOAD_BYTES="4096")
    with openai.OpenAI(base_url=service.url + "/v1", api_key=token, max_retries=0,
                       timeout=30) as client:
        yield client


def test_an_https_image_url_is_fetched_by_the_service_and_uploaded(allowed_sdk, emulator,
                                                                   image_server):
    answer = allowed_sdk.chat.completions.create(model="gpt-4o", messages=[
        image_message("And this?", image_server.url + "/cat.png")])
    assert received(CAT) in answer.choices[0].message.content
    pointer = writes(emulator)[-1]["messages"][-1]["content"]["parts"][0]
    assert (pointer["width"], pointer["height"]) == (5, 3)


def test_a_redirect_on_an_allowed_server_is_followed(allowed_sdk, emulator, image_server):
    answer = allowed_sdk.chat.completions.create(model="gpt-4o", messages=[
        image_message("Moved", image_server.url + "/to-cat")])
    assert received(CAT) in answer.choices[0].message.content


@pytest.mark.parametrize("path, status, code", [
    # localhost resolves to a loopback address and is not under IMAGE_URL_ALLOW
    ("/to-private", 400, "image_url_not_allowed"),
    ("/page", 415, "unsupported_file_type"),
    ("/big.png", 413, "file_too_large"),
    ("/missing.png", 400, "image_url_unreachable"),
])
def test_image_urls_that_cannot_be_used_are_refused(allowed_sdk, emulator, image_server, path,
                                                    status, code):
    with pytest.raises(openai.APIStatusError) as caught:
        allowed_sdk.chat.completions.create(model="gpt-4o", messages=[
            image_message("?", image_server.url + path)])
    assert (caught.value.status_code, caught.value.body["code"]) == (status, code)
    assert caught.value.body["param"] == "messages[0].content[1]"
    assert writes(emulator) == [] and emulator.requests_to("/files") == []


@pytest.mark.parametrize("url", [
    "http://example.com/cat.png",  # not https
    "https://127.0.0.1:1/cat.png",  # loopback
    "https://10.1.2.3/cat.png",  # private
    "https://[::ffff:192.168.0.1]/cat.png",  # private, IPv6-mapped
    "https://169.254.169.254/latest/meta-data",  # link-local (cloud metadata)
])
def test_without_an_allow_list_only_public_https_image_urls_are_fetched(sdk, emulator, url):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=[image_message("?", url)])
    assert caught.value.body["code"] == "image_url_not_allowed"
    assert writes(emulator) == []


def test_the_allowed_servers_certificate_must_verify(live_service_factory, token, emulator,
                                                     image_server):
    """IMAGE_URL_ALLOW skips the address check, not TLS verification."""
    service = live_service_factory(IMAGE_URL_ALLOW=image_server.url + "/")
    with openai.OpenAI(base_url=service.url + "/v1", api_key=token, max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="gpt-4o", messages=[
                image_message("?", image_server.url + "/cat.png")])
    assert caught.value.status_code == 502
    assert writes(emulator) == []


def test_an_earlier_image_url_in_a_continued_chat_is_not_fetched_again(allowed_sdk, emulator,
                                                                       image_server):
    history = [image_message("One", image_server.url + "/cat.png")]
    first = allowed_sdk.chat.completions.create(model="gpt-4o", messages=history)
    fetched = image_server.requests.count("/cat.png")
    history += [{"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "Two"}]
    allowed_sdk.chat.completions.create(model="gpt-4o", messages=history)
    assert image_server.requests.count("/cat.png") == fetched


# --- the upload's failures ----------------------------------------------------------------------

def test_a_file_the_account_could_not_process_is_502_upload_failed(sdk, emulator, dialect):
    if dialect == "2024":
        pytest.skip("the 2024 dialect has no processing stream")
    emulator.files.fail_processing = True
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=[
            image_message("?", data_url(png(1, 1)))])
    assert (caught.value.status_code, caught.value.body["code"]) == (502, "upload_failed")
    assert writes(emulator) == []


def test_an_upload_url_off_the_upstreams_origin_must_pass_the_ssrf_guard(sdk, emulator):
    emulator.files.upload_origin = "http://127.0.0.1:9"  # another origin, and a private one
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=[
            image_message("?", data_url(png(1, 1)))])
    assert (caught.value.status_code, caught.value.body["code"]) == (502, "upstream_bad_answer")
    assert [r for r in emulator.requests if r.method == "PUT"] == []


# --- the account pool ------------------------------------------------------------------------

def test_with_the_pool_files_go_to_the_account_that_holds_the_conversation(make_app, tmp_path,
                                                                           emulator):
    import io
    import json
    import random
    tokens = {name: emulator.mint_access_token(email=f"{name}@example.com") for name in "abc"}
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([{"name": n, "access_token": t} for n, t in tokens.items()]))
    app = make_app(ACCOUNTS_FILE=str(accounts))
    app.extensions["chatgpt_web"].pool._rng = random.Random(3)
    client = app.test_client()

    def send(image: bytes, **fields):
        response = client.post("/send_message", content_type="multipart/form-data", data={
            "prompt": "See", "file": (io.BytesIO(image), "p.png", "image/png"), **fields})
        assert response.status_code == 200, response.json
        return response.json

    first = send(png(1, 1, shade=1))
    answer = first
    for shade in (2, 3, 4):
        answer = send(png(1, 1, shade=shade), conversation_id=first["conversation_id"],
                      parent_message_id=answer["parent_message_id"])
        assert received(png(1, 1, shade=shade)) in answer["text"]
    bearers = {r.headers["authorization"] for r in emulator.requests
               if r.path.endswith(("/files", "/uploaded", "/conversation"))}
    assert len(bearers) == 1  # every upload and every write on one account
    owners = {f.owner for f in emulator.files.uploaded()}
    assert len(owners) == 1 and len(emulator.files.uploaded()) == 4


def test_the_upload_cache_is_per_account(live_service, emulator):
    image = png(2, 2, shade=5)
    alice, bob = (emulator.mint_access_token(email=e) for e in ("alice@x.org", "bob@x.org"))
    for token in (alice, bob, alice, bob):
        with openai.OpenAI(base_url=live_service.url + "/v1", api_key=token,
                           max_retries=0) as client:
            answer = client.chat.completions.create(model="gpt-4o", messages=[
                image_message("Mine?", data_url(image))])
            assert received(image) in answer.choices[0].message.content
    assert uploads_started(emulator) == 2
    assert len({f.owner for f in emulator.files.uploaded()}) == 2


def test_all_files_of_a_request_are_bounded_together(live_service_factory, token, emulator):
    """Each file is under MAX_UPLOAD_BYTES, but five of them are more than four times it."""
    service = live_service_factory(MAX_UPLOAD_BYTES="200")
    images = [png(1, 1, shade=shade) + b"\0" * 100 for shade in range(5)]
    with openai.OpenAI(base_url=service.url + "/v1", api_key=token, max_retries=0) as sdk:
        with pytest.raises(openai.APIStatusError) as caught:
            sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": data_url(image)}}
                for image in images]}])
    assert (caught.value.status_code, caught.value.body["code"]) == (413, "file_too_large")
    assert caught.value.body["param"] == "messages[0].content[4]"
    assert emulator.requests_to("/files") == []


def test_base64_without_padding_is_read(sdk, emulator):
    image = png(1, 2)
    image += b"\0" * (len(image) % 3 == 0)  # a length whose base64 needs padding
    encoded = base64.b64encode(image).decode()
    assert encoded.endswith("=")
    answer = sdk.chat.completions.create(model="gpt-4o", messages=[
        image_message("Short", "data:image/png;base64," + encoded.rstrip("="))])
    assert received(image) in answer.choices[0].message.content


def test_malformed_base64_is_a_400_naming_the_part(sdk, emulator):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="gpt-4o", messages=[
            image_message("Bad", "data:image/png;base64,@@not base64@@")])
    assert caught.value.body["param"] == "messages[0].content[1]"
