"""Images and files sent through the official SDK reach the account as uploads (docs/files.md).

The emulator stores what is PUT to its blob sink and its model answers with the name, type,
size and SHA-256 of every file the message points at, so these tests see the real bytes travel:
caller -> service -> account's file store -> the message. Both dialects; the limits and the
SSRF guard, which do not depend on the dialect, are in test_vision_limits.py.
"""
from __future__ import annotations

from tests.vision_helpers import (
    PDF,
    data_url,
    image_message,
    png,
    received,
    uploads_started,
    writes,
)

BOTH_DIALECTS = True


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


def test_responses_input_image_and_input_file_are_uploaded_too(sdk, emulator):
    image = png(6, 1)
    response = sdk.responses.create(model="gpt-4o", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "Both"},
        {"type": "input_image", "image_url": data_url(image)},
        {"type": "input_file", "file_data": data_url(PDF, "application/pdf"),
         "filename": "b.pdf"}]}])
    assert received(image) in response.output_text and received(PDF) in response.output_text


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

