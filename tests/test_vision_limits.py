"""What the service refuses or bounds when files come with a message (docs/files.md): sizes,
types, image URLs through the SSRF guard, the upload's failures, the per-account upload cache.
"""
from __future__ import annotations

import base64

import openai
import pytest

from tests.vision_helpers import (
    PDF,
    data_url,
    image_message,
    png,
    received,
    uploads_started,
    writes,
)

# --- sizes and types -------------------------------------------------------------------------

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


def test_an_image_server_answering_invalid_http_is_a_502_that_says_so(allowed_sdk, emulator,
                                                                     image_server):
    """Content-Length: -5 is not HTTP: curl refuses the answer, after connecting."""
    with pytest.raises(openai.APIStatusError) as caught:
        allowed_sdk.chat.completions.create(model="gpt-4o", messages=[
            image_message("?", image_server.url + "/bad-length.png")])
    assert (caught.value.status_code, caught.value.body["code"]) == (502, "upstream_bad_answer")
    assert caught.value.body["param"] == "messages[0].content[1]"
    assert "answer was not valid HTTP" in caught.value.body["message"]
    assert "connect" not in caught.value.body["message"]
    assert writes(emulator) == []


def test_a_slow_image_server_gets_a_timeout_after_image_url_timeout(live_service_factory, token,
                                                                     emulator, image_server):
    """The server sends the headers and 8 bytes, then holds the rest back for 5 seconds: the
    fetch gives up after IMAGE_URL_TIMEOUT, not when the body finally comes (nor after curl's
    low-speed check, about 7 seconds for a stalled stream)."""
    service = live_service_factory(IMAGE_URL_ALLOW=image_server.url + "/",
                                   IMAGE_URL_CA_FILE=str(image_server.cert_file),
                                   IMAGE_URL_TIMEOUT="0.5")
    with openai.OpenAI(base_url=service.url + "/v1", api_key=token, max_retries=0,
                       timeout=15) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="gpt-4o", messages=[
                image_message("?", image_server.url + "/slow.png")])
    assert not image_server.slow_sent.is_set()  # refused while the server still held it
    assert (caught.value.status_code, caught.value.body["code"]) == (504, "image_url_timeout")
    assert caught.value.body["param"] == "messages[0].content[1]"
    assert "IMAGE_URL_TIMEOUT (0.5 s)" in caught.value.body["message"]
    assert writes(emulator) == []


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


# --- the upload's failures and cache ------------------------------------------------------------

def test_a_file_the_account_could_not_process_is_502_upload_failed(sdk, emulator):
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

