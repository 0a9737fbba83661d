"""The command line, run as a real subprocess against the emulator (`python -m chatgpt_web ...`).

Its output is not a terminal here, so it is the plain form: results on stdout, notes on stderr.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import jwt
import pytest

from tests.emulator.auth_pages import totp
from tests.sent_turns import conversation_posts
from tests.servers import REPO, free_port

EMAIL, PASSWORD = "cli@example.com", "a long and secret passphrase"


@pytest.fixture
def cli_env(service_env):
    """The environment of a user pointing the command line at the emulator."""
    return {**os.environ, **service_env}


def run(env, *args, stdin="", timeout=60):
    return subprocess.run([sys.executable, "-m", "chatgpt_web", *args], cwd=REPO, env=env,
                          input=stdin, capture_output=True, text=True, timeout=timeout)


# --- ask -----------------------------------------------------------------------------------------

def test_ask_prints_the_answer_and_continues_with_c(cli_env, emulator, token):
    env = {**cli_env, "CHATGPT_ACCESS_TOKEN": token}
    first = run(env, "ask", "hello", "there")
    assert (first.returncode, first.stdout) == (0, "Echo: hello there\n"), first.stderr
    second = run(env, "ask", "-c", "and", "more")
    assert (second.returncode, second.stdout) == (0, "Echo: and more\n"), second.stderr
    opening, continued = conversation_posts(emulator)
    assert "conversation_id" not in opening
    conversation = emulator.conversations.get(continued["conversation_id"])
    assert [m["content"]["parts"][0] for m in conversation.received
            if m["author"]["role"] == "user"] == ["hello there", "and more"]
    # The state kept for -c holds ids only: no prompt, no answer, no token.
    with open(os.path.join(env["CACHE_DIR"], "cli-last-conversation.json")) as handle:
        kept = handle.read()
    assert "hello" not in kept and token not in kept and "Echo" not in kept


def test_ask_streams_as_the_answer_arrives(cli_env, emulator, token):
    emulator.switches.answer = " ".join(f"word{n}" for n in range(12))
    emulator.switches.chunk_delay = 0.25
    emulator.switches.chunking = False
    process = subprocess.Popen([sys.executable, "-m", "chatgpt_web", "ask", "go"], cwd=REPO,
                               env={**cli_env, "CHATGPT_ACCESS_TOKEN": token},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = process.stdout.read(5)
        assert first == b"word0"
        assert process.poll() is None  # the rest of the answer is still coming
        rest = process.stdout.read()
    finally:
        process.wait(30)
    assert (first + rest).decode().strip() == emulator.switches.answer


def test_ask_reads_the_prompt_from_stdin_and_reports_errors_with_their_code(cli_env, emulator):
    env = {**cli_env, "CHATGPT_ACCESS_TOKEN": emulator.mint_access_token()}
    piped = run(env, "ask", stdin="a question\nover two lines\n")
    assert piped.stdout == "Echo: a question\nover two lines\n"
    expired = run({**cli_env, "CHATGPT_ACCESS_TOKEN": emulator.mint_access_token(exp_in=-5)},
                  "ask", "hi")
    assert expired.returncode == 1 and expired.stdout == ""
    assert "token_expired" in expired.stderr
    nothing = run(cli_env, "ask", "hi")
    assert nothing.returncode == 1 and "CHATGPT_ACCESS_TOKEN" in nothing.stderr
    emulator.switches.fail_with = "rate_limit"
    limited = run(env, "ask", "hi")
    assert limited.returncode == 1 and "upstream_rate_limited" in limited.stderr


# --- login ---------------------------------------------------------------------------------------

def test_login_reads_the_password_from_stdin_and_prints_a_token(cli_env, emulator):
    emulator.auth.add_account(EMAIL, PASSWORD)
    signed_in = run(cli_env, "login", "--email", EMAIL, stdin=PASSWORD + "\n")
    assert signed_in.returncode == 0, signed_in.stderr
    token = signed_in.stdout.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["https://api.openai.com/profile"]["email"] == EMAIL
    assert PASSWORD not in signed_in.stdout + signed_in.stderr
    assert "expires in" in signed_in.stderr
    # The token it printed is one the service accepts.
    asked = run({**cli_env, "CHATGPT_ACCESS_TOKEN": token}, "ask", "hi")
    assert asked.stdout == "Echo: hi\n"


def test_login_asks_for_the_code_when_the_account_needs_one(cli_env, emulator):
    secret = "JBSWY3DPEHPK3PXP"
    emulator.auth.add_account(EMAIL, PASSWORD, totp_secret=secret)
    signed_in = run(cli_env, "login", "--email", EMAIL, "--json",
                    stdin=f"{PASSWORD}\n{totp(secret)}\n")
    assert signed_in.returncode == 0, signed_in.stderr
    answer = json.loads(signed_in.stdout)
    assert answer["access_token"] and answer["expires_at"] > time.time()
    assert "authenticator" in signed_in.stderr  # why the code was asked for


def test_a_wrong_password_is_a_clear_failure(cli_env, emulator):
    emulator.auth.add_account(EMAIL, PASSWORD)
    refused = run(cli_env, "login", "--email", EMAIL, stdin="hunter2-not-it\n")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "invalid_credentials" in refused.stderr and "hunter2" not in refused.stderr


# --- accounts, keys, check -------------------------------------------------------------------

def test_accounts_prints_the_pool_as_plain_rows(cli_env, emulator, tmp_path):
    path = tmp_path / "accounts.json"
    path.write_text(json.dumps([
        {"name": "alpha", "access_token": emulator.mint_access_token(exp_in=7200)},
        {"name": "beta", "access_token": emulator.mint_access_token(), "weight": 3}]))
    env = {**cli_env, "ACCOUNTS_FILE": str(path)}
    run({**env, "CHATGPT_ACCESS_TOKEN": ""}, "ask", "warm up the pool")
    listed = run(env, "accounts")
    assert listed.returncode == 0, listed.stderr
    header, *rows = [line.split("\t") for line in listed.stdout.splitlines()]
    assert header[:4] == ["account", "kind", "weight", "status"]
    assert {row[0]: row[2:4] for row in rows} == {"alpha": ["1", "healthy"],
                                                  "beta": ["3", "healthy"]}
    assert header[8:] == ["refused", "renewals failed", "other model"]
    assert all(row[8:10] == ["0", "0"] for row in rows)
    assert "eyJ" not in listed.stdout  # never a token
    assert run(cli_env, "accounts").returncode == 1


def test_keys_makes_a_key_and_its_file_line(cli_env):
    made = run(cli_env, "keys", "new", "ci runner")
    assert made.returncode == 0
    key = made.stdout.split("sk-cw-", 1)[1].split()[0]
    hashed = run(cli_env, "keys", "hash", "ci runner", stdin="sk-cw-" + key + "\n")
    assert hashed.stdout.strip() in made.stdout


def test_check_reaches_the_upstream_and_reports_each_step(cli_env, emulator):
    checked = run(cli_env, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ok"] * len(lines)
    assert any(line.startswith("ok    upstream") and emulator.url in line for line in lines)
    assert len(emulator.requests) == 1  # reached once


def test_check_names_what_is_wrong(cli_env):
    bad = run({**cli_env, "RATE_LIMIT": "lots"}, "check")
    assert bad.returncode == 1 and "FAIL  configuration" in bad.stdout
    assert "RATE_LIMIT" in bad.stdout
    nowhere = run({**cli_env, "CHATGPT_BASE_URL": f"http://127.0.0.1:{free_port()}"}, "check")
    assert nowhere.returncode == 1
    assert "FAIL  upstream" in nowhere.stdout and "upstream_unreachable" in nowhere.stdout


def test_help_lists_the_commands(cli_env):
    shown = run(cli_env, "--help")
    for command in ("serve", "login", "ask", "accounts", "keys", "check"):
        assert command in shown.stdout
