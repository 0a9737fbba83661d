"""The operator's actions on pooled accounts: re-check, disable, enable, and the downgrade flag."""
from __future__ import annotations

import json

import pytest

from chatgpt_web.pool import Account, AccountPool
from chatgpt_web.store import MemoryStore

ADMIN = "admin-secret-for-actions"


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def pooled(make_app, tmp_path, emulator):
    """An app with an admin key and two pooled accounts, "a" and "b"."""
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps([
        {"name": "a", "access_token": emulator.mint_access_token(email="a@example.com")},
        {"name": "b", "access_token": emulator.mint_access_token(email="b@example.com")},
    ]))
    return make_app(ACCOUNTS_FILE=str(path), ADMIN_KEY=ADMIN)


def act(client, account, action):
    return client.post(f"/admin/accounts/{account}/{action}", headers=bearer(ADMIN))


def served_by(emulator):
    """The e-mail claim of the token behind each conversation POST."""
    import jwt
    emails = []
    for request in emulator.requests_to("/conversation"):
        if request.method == "POST":
            token = request.headers["authorization"].split(" ", 1)[1]
            claims = jwt.decode(token, options={"verify_signature": False})
            emails.append(claims["https://api.openai.com/profile"]["email"])
    return emails


def test_a_disabled_account_serves_nothing_until_enabled(pooled, emulator):
    client = pooled.test_client()
    disabled = act(client, "a", "disable")
    assert disabled.status_code == 200 and disabled.json["account"]["status"] == "disabled"
    for _ in range(6):
        assert client.post("/send_message", data={"prompt": "Hi"}).status_code == 200
    assert set(served_by(emulator)) == {"b@example.com"}

    enabled = act(client, "a", "enable")
    assert enabled.json["account"]["status"] == "healthy"
    emulator.requests.clear()
    # The choice is random: ask until "a" has served (64 tries: missing it every time has odds
    # of 2**-64; 12 tries missed it 1 time in 4096).
    for _ in range(64):
        assert client.post("/send_message", data={"prompt": "Hi"}).status_code == 200
        if "a@example.com" in served_by(emulator):
            break
    assert "a@example.com" in served_by(emulator)


def test_a_conversation_on_a_disabled_account_cannot_continue(pooled, emulator):
    client = pooled.test_client()
    first = client.post("/send_message", data={"prompt": "Hi"}).json
    holder = "a" if served_by(emulator) == ["a@example.com"] else "b"
    act(client, holder, "disable")
    again = client.post("/send_message", data={
        "prompt": "more", "conversation_id": first["conversation_id"],
        "parent_message_id": first["parent_message_id"]})
    assert again.status_code == 409 and again.json["code"] == "conversation_account_gone"


def test_recheck_tries_the_token_upstream_and_records_the_outcome(make_app, tmp_path, emulator):
    from tests.emulator import Emulator
    stranger = Emulator()  # its tokens are signed with another secret: our emulator refuses them
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps([
        {"name": "good", "access_token": emulator.mint_access_token()},
        {"name": "refused", "access_token": stranger.mint_access_token()},
    ]))
    client = make_app(ACCOUNTS_FILE=str(path), ADMIN_KEY=ADMIN).test_client()

    good = act(client, "good", "check")
    assert good.status_code == 200 and good.json["ok"] is True
    assert good.json["account"]["status"] == "healthy"
    assert good.json["account"]["token_expires_at"] > 0
    probes = [r for r in emulator.requests_to("/conversations") if r.method == "GET"]
    assert len(probes) == 1 and probes[0].args["limit"] == "1"  # a list call: no quota spent
    assert emulator.requests_to("/conversation") == []

    refused = act(client, "refused", "check")
    assert refused.status_code == 200 and refused.json["ok"] is False
    assert refused.json["error"]["status"] == 401
    assert refused.json["account"]["status"] == "dead"
    assert refused.json["account"]["last_error"] == refused.json["error"]["code"]


def test_a_rested_account_is_cleared_by_a_successful_recheck(pooled, emulator):
    client = pooled.test_client()
    emulator.switches.fail_with = "rate_limit"
    emulator.switches.fail_times = 2
    client.post("/send_message", data={"prompt": "Hi"})
    rows = {row["id"]: row for row in client.get("/admin/accounts", headers=bearer(ADMIN)).json[
        "accounts"]}
    resting = [name for name, row in rows.items() if row["status"] == "resting"]
    assert resting
    checked = act(client, resting[0], "check")
    assert checked.json["ok"] is True
    assert checked.json["account"]["status"] == "healthy"
    assert checked.json["account"]["rest_until"] is None
    assert checked.json["account"]["last_error"] is None


def test_actions_need_the_admin_key_and_a_known_account(pooled, make_app):
    client = pooled.test_client()
    assert client.post("/admin/accounts/a/disable").status_code == 401
    assert client.post("/admin/accounts/a/disable", headers=bearer("nope")).status_code == 401
    unknown = act(client, "zzz", "disable")
    assert unknown.status_code == 404 and unknown.json["code"] == "account_not_found"
    assert client.get("/admin/accounts/a/disable", headers=bearer(ADMIN)).status_code == 405
    no_pool = make_app(ADMIN_KEY=ADMIN).test_client()
    assert act(no_pool, "a", "check").status_code == 404


def test_a_model_downgrade_is_flagged_and_cleared():
    account = Account("solo", "access_token", access_token="t")
    pool = AccountPool([account], MemoryStore(), tokens=None, clock=lambda: 1000.0)
    pool._note_model(account, "gpt-4o", "gpt-4o-mini")
    assert pool.report()[0]["downgraded"] == {"requested": "gpt-4o", "served": "gpt-4o-mini",
                                              "at": 1000.0}
    pool._note_model(account, "auto", "gpt-4o-mini")  # auto lets the upstream choose
    assert pool.report()[0]["downgraded"] is not None
    pool._note_model(account, "gpt-4o", "gpt-4o-2024-08-06")  # a dated name of the same model
    assert pool.report()[0]["downgraded"] is None
