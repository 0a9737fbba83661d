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
