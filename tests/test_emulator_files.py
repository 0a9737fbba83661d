"""The emulator's file store on its own (tests/emulator/files.py), spoken to with plain requests."""
import requests

API = "/backend-api"


def auth(token):
    return {"Authorization": f"Bearer {token}"}


def create(emulator, token, size=3, **extra):
    answer = requests.post(emulator.url + API + "/files", headers=auth(token), timeout=10,
                           json={"file_name": "a.png", "file_size": size,
                                 "use_case": "multimodal", **extra})
    assert answer.status_code == 200, answer.text
    return answer.json()


def put(url, data, **headers):
    return requests.put(url, data=data, timeout=10, headers={
        "x-ms-blob-type": "BlockBlob", "x-ms-version": "2020-04-08", **headers})


def test_create_put_confirm_and_process(emulator, token):
    created = create(emulator, token)
    assert created["status"] == "success" and created["file_id"].startswith("file_0000")
    assert put(created["upload_url"], b"abc").status_code == 201
    confirmed = requests.post(f"{emulator.url}{API}/files/{created['file_id']}/uploaded",
                              json={}, headers=auth(token), timeout=10)
    assert confirmed.json() == {"status": "success", "file_id": created["file_id"]}
    processed = requests.post(emulator.url + API + "/files/process_upload_stream",
                              json={"file_id": created["file_id"]}, headers=auth(token),
                              timeout=10)
    events = [line for line in processed.text.splitlines() if line]
    assert '"file.processing.metadata"' in events[-1] and '"progress":100' in events[-1]
    assert emulator.files.get(created["file_id"]).data == b"abc"


def test_the_blob_sink_checks_signature_headers_and_size(emulator, token):
    created = create(emulator, token)
    url = created["upload_url"]
    assert put(url.replace("sig=", "sig=x"), b"abc").status_code == 403
    assert requests.put(url, data=b"abc", timeout=10).status_code == 400  # no blob headers
    assert put(url, b"abcd").status_code == 400  # not the declared size
    assert emulator.files.get(created["file_id"]).data is None


def test_files_belong_to_their_account(emulator, token):
    created = create(emulator, token)
    put(created["upload_url"], b"abc")
    other = emulator.mint_access_token(email="other@example.com")
    answer = requests.post(f"{emulator.url}{API}/files/{created['file_id']}/uploaded", json={},
                           headers=auth(other), timeout=10)
    assert answer.status_code == 404


def test_a_confirmation_before_the_bytes_is_refused(emulator, token):
    created = create(emulator, token)
    answer = requests.post(f"{emulator.url}{API}/files/{created['file_id']}/uploaded", json={},
                           headers=auth(token), timeout=10)
    assert answer.status_code == 400


def test_the_2024_dialect_has_older_ids_and_no_processing_stream(emulator, token):
    emulator.switches.dialect = "2024"
    created = create(emulator, token)
    assert created["file_id"].startswith("file-")
    answer = requests.post(emulator.url + API + "/files/process_upload_stream",
                           json={"file_id": created["file_id"]}, headers=auth(token), timeout=10)
    assert answer.status_code == 404


def test_bad_creations_are_refused(emulator, token):
    for body in ({"file_name": "", "file_size": 3, "use_case": "multimodal"},
                 {"file_name": "a", "file_size": 0, "use_case": "multimodal"},
                 {"file_name": "a", "file_size": 3, "use_case": "nope"}):
        answer = requests.post(emulator.url + API + "/files", json=body, headers=auth(token),
                               timeout=10)
        assert answer.status_code == 422
    assert requests.post(emulator.url + API + "/files", json={}, timeout=10).status_code == 401


def test_made_files_are_stored_whole(emulator):
    file_id = emulator.files.put(b"\x89PNG...", "made.png", "image/png", owner="user-x")
    stored = emulator.files.get(file_id)
    assert (stored.owner, stored.data, stored.confirmed) == ("user-x", b"\x89PNG...", True)
