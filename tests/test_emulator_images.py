"""The emulator's image downloads (tests/emulator/images.py): each file to its owner only, each
pointer kind through its own endpoint, and the estuary URL only with a valid signature."""
import pytest
from curl_cffi import requests as curl_requests
from werkzeug.exceptions import HTTPException

from tests.emulator import tokens
from tests.emulator.files import check_message_files, describe
from tests.emulator.images import tiny_png

PNG = tiny_png(b"emulator test")


def owner_of(emulator, token):
    return tokens.user_id(tokens.verify(emulator.secret, token))


def get(emulator, path, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return curl_requests.get(emulator.url + "/backend-api" + path, headers=headers, timeout=30)


def test_a_sediment_file_downloads_for_its_owner_with_its_conversation(emulator, token):
    file_id = emulator.images.add(owner_of(emulator, token), "conv-1", PNG).split("://")[1]
    answer = get(emulator, f"/files/download/{file_id}?conversation_id=conv-1&inline=false", token)
    assert answer.status_code == 200 and answer.json()["status"] == "success"
    url = answer.json()["download_url"]
    assert url.startswith(emulator.url + "/backend-api/estuary/content?id=" + file_id)
    image = curl_requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert image.status_code == 200 and image.content == PNG
    assert image.headers["Content-Type"] == "image/png"
    # Without the bearer, or with its signature changed, the content is refused.
    assert curl_requests.get(url, timeout=30).status_code == 401
    forged = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
    assert curl_requests.get(forged, headers={"Authorization": f"Bearer {token}"},
                             timeout=30).status_code == 403


def test_files_are_private_to_their_account_and_kind(emulator, token):
    file_id = emulator.images.add(owner_of(emulator, token), "conv-1", PNG).split("://")[1]
    other = emulator.mint_access_token(email="other@example.com", sub="user-other")
    assert get(emulator, f"/files/download/{file_id}?conversation_id=conv-1", other).status_code \
        == 404
    assert get(emulator, f"/files/download/{file_id}?conversation_id=conv-2", token).status_code \
        == 404
    assert get(emulator, f"/files/{file_id}/download", token).status_code == 404  # not legacy
    assert get(emulator, f"/files/download/{file_id}?conversation_id=conv-1").status_code == 401


def test_older_pointers_download_through_the_legacy_endpoint(emulator, token):
    emulator.images.scheme = "file-service"
    pointer = emulator.images.add(owner_of(emulator, token), "conv-1", PNG)
    assert pointer.startswith("file-service://file-")
    file_id = pointer.split("://")[1]
    answer = get(emulator, f"/files/{file_id}/download", token)
    assert answer.status_code == 200
    image = curl_requests.get(answer.json()["download_url"],
                              headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert image.content == PNG


def test_reset_forgets_images_and_knobs(emulator, token):
    emulator.images.add(owner_of(emulator, token), "conv-1", PNG)
    emulator.images.scheme = "file-service"
    emulator.reset()
    assert emulator.files.generated() == [] and emulator.images.scheme == "sediment"


def test_a_drawn_image_is_a_file_of_its_account_as_an_upload_is(emulator, token):
    """The site has one file service: a drawn image's pointer may come back in a message of its
    owner (as the web app sends it to edit the image), not of another account; it is no upload."""
    owner = owner_of(emulator, token)
    pointer = emulator.images.add(owner, "conv-1", PNG)
    message = {"content": {"content_type": "multimodal_text", "parts": [
        {"content_type": "image_asset_pointer", "asset_pointer": pointer}]}}
    check_message_files(emulator.files, owner, [message])
    assert f"image/png {len(PNG)} bytes" in describe(emulator.files, message)
    with pytest.raises(HTTPException) as refused:
        check_message_files(emulator.files, "user-other", [message])
    assert refused.value.response.status_code == 404
    assert emulator.files.uploaded() == []
