"""The command line: `python -m chatgpt_web <command>` (or `chatgpt-web <command>`).

    serve       start the service (the default with no command)
    login       sign in and print an access token (password and code asked without echo)
    ask         stream an answer to the terminal; -c continues the last conversation
    accounts    the account pool's health as a table
    keys        make and manage client keys (as python -m chatgpt_web.keys)
    check       validate the configuration and reach the upstream once

Every command reads the same environment variables as the service (README, "Configuration").
`ask` runs as the access token in CHATGPT_ACCESS_TOKEN, else on the accounts of ACCOUNTS_FILE.
Long steps (signing in, the proof of work before an answer) show a spinner on a terminal; when
the output is not a terminal everything is plain text, one record per line.
"""
from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import sys
import time
from collections.abc import Iterator

from rich.console import Console
from rich.table import Table

from . import keys
from .api.credentials import Grant
from .config import Config
from .errors import ApiError, ConfigError
from .pool import load_accounts
from .services import Services
from .tokens import Credential, ensure_not_expired
from .transport import new_session, upstream_errors
from .upstream.conversation import ChatMessage, ConversationRequest
from .upstream.endpoints import from_base_url
from .upstream.errors import is_cloudflare_page

TOKEN_VARIABLE = "CHATGPT_ACCESS_TOKEN"
LAST_CONVERSATION = "cli-last-conversation.json"


class Terminal:
    """Where the commands talk: results on stdout, progress and notes on stderr."""

    def __init__(self) -> None:
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.out = Console(highlight=False, soft_wrap=True)

    @contextlib.contextmanager
    def progress(self, text: str) -> Iterator[None]:
        """A spinner with `text` while the block runs (on a terminal only)."""
        if self.err.is_terminal:
            with self.err.status(text):
                yield
        else:
            yield

    def note(self, text: str) -> None:
        """A line for the person at the terminal (plain text when stderr is not one)."""
        self.err.print(text)

    def fail(self, error: ApiError | ConfigError | str) -> int:
        if isinstance(error, ApiError):
            text = f"error: {error.code}: {error.message}"
        else:
            text = f"error: {error}"
        self.err.print(text, style="red", markup=False)
        return 1

    def secret(self, prompt: str) -> str:
        """A secret read without echo on a terminal, else one line of standard input."""
        if sys.stdin.isatty():
            return getpass.getpass(prompt)
        return sys.stdin.readline().rstrip("\r\n")

    def ask_line(self, prompt: str) -> str:
        if sys.stdin.isatty():
            return input(prompt)
        return sys.stdin.readline().rstrip("\r\n")


def _services() -> Services:
    return Services(Config.from_env())


# --- serve ---------------------------------------------------------------------------------------

SERVER_SETTINGS = "python:chatgpt_web.gunicorn_config"
APP = "chatgpt_web:create_app()"


def serve(_args: argparse.Namespace, _terminal: Terminal) -> int:
    """Start gunicorn on $PORT (default 3000) with the package's server settings
    (gunicorn_config.py), from any directory: nothing is read from a checkout."""
    os.execvp(sys.executable, [sys.executable, "-m", "gunicorn", "-c", SERVER_SETTINGS, APP])
    return 0  # not reached: gunicorn replaced this process


# --- login ---------------------------------------------------------------------------------------

def login(args: argparse.Namespace, terminal: Terminal) -> int:
    services = _services()
    if args.session_token:
        credential = Credential.session_token(terminal.secret("Session token: "))
    elif args.refresh_token:
        credential = Credential.refresh_token(terminal.secret("Refresh token: "))
    else:
        email = args.email or terminal.ask_line("Email: ").strip()
        password = terminal.secret("Password: ")
        if not email or not password:
            return terminal.fail("an email and a password are needed")
        credential = Credential.password(email, password)
    try:
        with terminal.progress("Signing in…"):
            issued = services.tokens.access_token(credential, force=args.force)
    except ApiError as error:
        if error.code != "mfa_required" or credential.kind != "password":
            return terminal.fail(error)
        terminal.note(error.message)
        code = terminal.secret("One-time code: ").strip()
        try:
            with terminal.progress("Signing in with the code…"):
                issued = services.tokens.access_token(
                    Credential.password(*credential.secrets, code), force=True)
        except ApiError as again:
            return terminal.fail(again)
    if args.json:
        answer = {"access_token": issued.access_token, "expires_at": issued.expires_at}
        if issued.session_token:
            answer["session_token"] = issued.session_token
        if issued.refresh_token:
            answer["refresh_token"] = issued.refresh_token
        print(json.dumps(answer))
    else:
        print(issued.access_token)
    if issued.expires_at:
        left = _duration(issued.expires_at - time.time())
        terminal.note(f"signed in; the token expires in {left} "
                      f"(export {TOKEN_VARIABLE}=<token> for `ask`)")
    return 0


# --- ask -----------------------------------------------------------------------------------------

def _last_path(services: Services) -> str:
    return os.path.join(services.config.cache_dir, LAST_CONVERSATION)


def _read_last(services: Services) -> dict | None:
    try:
        with open(_last_path(services), encoding="utf-8") as handle:
            last = json.load(handle)
    except (OSError, ValueError):
        return None
    return last if isinstance(last, dict) else None


def _write_last(services: Services, conversation_id: str, message_id: str) -> None:
    # Only ids (no prompt, no answer, no token): enough for -c to continue.
    try:
        os.makedirs(services.config.cache_dir, exist_ok=True)
        with open(_last_path(services), "w", encoding="utf-8") as handle:
            json.dump({"conversation_id": conversation_id, "message_id": message_id}, handle)
    except OSError:
        pass


def ask(args: argparse.Namespace, terminal: Terminal) -> int:
    prompt = " ".join(args.prompt).strip()
    if (not prompt or prompt == "-") and not sys.stdin.isatty():
        prompt = sys.stdin.read(1_000_000).strip()
    if not prompt:
        return terminal.fail("nothing to ask: give the prompt as arguments or on standard input")
    services = _services()
    config = services.config
    upstream = from_base_url(config.base_url)
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if token:
        ensure_not_expired(token)
        grant = Grant(token, upstream)
    elif services.pool is not None:
        grant = Grant(None, upstream, services.pool)
    else:
        return terminal.fail(f"no credential: set {TOKEN_VARIABLE} (python -m chatgpt_web login "
                             "prints one) or ACCOUNTS_FILE")
    conversation_id = parent_id = None
    if args.continue_:
        last = _read_last(services)
        if not last:
            return terminal.fail("no earlier conversation to continue (ask once without -c)")
        conversation_id, parent_id = last.get("conversation_id"), last.get("message_id")
    request = ConversationRequest(messages=(ChatMessage("user", prompt),),
                                  model=args.model or config.default_model,
                                  conversation_id=conversation_id, parent_message_id=parent_id,
                                  timeout=config.request_timeout)
    with terminal.progress("Waiting for the answer (sentinel, proof of work)…"):
        answer = grant.start_answer(services.conversations, request)
    with answer:
        for delta in answer:
            sys.stdout.write(delta.text)
            sys.stdout.flush()
        completion = answer.completion
    sys.stdout.write("\n")
    sys.stdout.flush()
    if completion.conversation_id and completion.message_id:
        _write_last(services, completion.conversation_id, completion.message_id)
    details = [f"model {completion.model_slug}" if completion.model_slug else None,
               f"“{completion.title}”" if completion.title else None,
               "continue with -c" if completion.conversation_id else None]
    if terminal.err.is_terminal:
        terminal.err.print(" · ".join(d for d in details if d), style="dim", markup=False)
    return 0


# --- accounts ------------------------------------------------------------------------------------

def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds <= 0:
        return "expired"
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds % 60:02d}s"


def _share(share: dict | None) -> str:
    """Answers from another model than asked, of those whose model could be told."""
    if not share or not share.get("answers"):
        return "-"
    return f"{share['other_model']}/{share['answers']}"


def accounts(_args: argparse.Namespace, terminal: Terminal) -> int:
    services = _services()
    if services.pool is None:
        return terminal.fail("no pooled accounts: ACCOUNTS_FILE is not set")
    now = time.time()
    columns = ("account", "kind", "weight", "status", "token expires", "resting", "last error",
               "downgrade", "refused", "renewals failed", "other model")
    rows = []
    for row in services.pool.report():
        downgraded = row.get("downgraded")
        rows.append((
            row["id"], row["kind"], f"{row['weight']:g}", row["status"],
            _duration(row["token_expires_at"] - now) if row.get("token_expires_at") else "-",
            _duration(row["rest_until"] - now) if row.get("rest_until") else "-",
            row.get("last_error") or "-",
            f"{downgraded['requested']} -> {downgraded['served']}" if downgraded else "-",
            str(row.get("refusals", 0)), str(row.get("refresh_failures", 0)),
            _share(row.get("model_share")),
        ))
    if terminal.out.is_terminal:
        table = Table(*columns, title="Pooled accounts")
        colours = {"healthy": "green", "resting": "yellow", "dead": "red", "disabled": "red"}
        for values in rows:
            table.add_row(*values, style=None if values[3] == "healthy" else colours.get(values[3]))
        terminal.out.print(table)
    else:
        print("\t".join(columns))
        for values in rows:
            print("\t".join(values))
    return 0


# --- keys ----------------------------------------------------------------------------------------

def make_keys(args: argparse.Namespace, _terminal: Terminal) -> int:
    return keys.main(args.rest)


# --- check ---------------------------------------------------------------------------------------

class Report:
    """The lines of `check`: what was checked, and whether it passed."""

    def __init__(self, terminal: Terminal):
        self.terminal = terminal
        self.failed = 0

    def line(self, ok: bool, what: str, detail: str = "") -> None:
        self.failed += not ok
        mark = "ok  " if ok else "FAIL"
        text = f"{mark}  {what}" + (f": {detail}" if detail else "")
        if self.terminal.out.is_terminal:
            self.terminal.out.print(text, style="green" if ok else "bold red", markup=False)
        else:
            print(text)


def check(_args: argparse.Namespace, terminal: Terminal) -> int:
    report = Report(terminal)
    try:
        config = Config.from_env()
    except ConfigError as error:
        report.line(False, "configuration", str(error))
        return 1
    report.line(True, "configuration", "every variable is valid")
    services = Services(config)
    try:
        ring = services.keys
        report.line(True, "client keys", "on" if ring.enabled else "off (API_KEYS not set)")
    except ConfigError as error:
        report.line(False, "client keys", str(error))
    if config.accounts_file:
        try:
            report.line(True, "accounts", f"{len(load_accounts(config.accounts_file))} in "
                                          "ACCOUNTS_FILE")
        except ConfigError as error:
            report.line(False, "accounts", str(error))
    try:
        store = services.store
        report.line(store.writable(), "state store", store.kind)
    except ApiError as error:
        report.line(False, "state store", error.message)
    started = time.monotonic()
    try:
        with terminal.progress("Reaching the upstream…"):
            with new_session(config) as session, upstream_errors("home page"):
                response = session.get(config.base_url + "/", timeout=15,
                                       headers={"Accept": "text/html"})
                body = response.content[:100_000]
    except ApiError as error:
        report.line(False, "upstream", f"{config.base_url}: {error.code}: {error.message}")
        return 1
    took = f"HTTP {response.status_code} in {time.monotonic() - started:.2f} s"
    if is_cloudflare_page(body):
        report.line(False, "upstream", f"{config.base_url}: a Cloudflare challenge ({took}); "
                                       "use CHATGPT_PROXY or another CHATGPT_IMPERSONATE")
    else:
        report.line(response.status_code < 500, "upstream", f"{config.base_url} answered {took}")
    return 1 if report.failed else 0


# --- the parser ----------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m chatgpt_web",
                                  description="chatgpt_web: serve, sign in, ask, operate.")
    commands = top.add_subparsers(dest="command", metavar="command")
    commands.add_parser("serve", help="start the service (the default)").set_defaults(run=serve)

    sign_in = commands.add_parser("login", help="sign in and print an access token")
    sign_in.add_argument("--email", help="the account's email (asked when missing)")
    source = sign_in.add_mutually_exclusive_group()
    source.add_argument("--session-token", action="store_true",
                        help="sign in with a session token (asked without echo)")
    source.add_argument("--refresh-token", action="store_true",
                        help="sign in with a refresh token (asked without echo)")
    sign_in.add_argument("--json", action="store_true",
                         help="print JSON with the token, its expiry and any rotated tokens")
    sign_in.add_argument("--force", action="store_true", help="skip the token cache")
    sign_in.set_defaults(run=login)

    question = commands.add_parser("ask", help="stream an answer to the terminal")
    question.add_argument("prompt", nargs="*", help="the message ('-' or nothing: stdin)")
    question.add_argument("-c", "--continue", dest="continue_", action="store_true",
                          help="continue the last conversation")
    question.add_argument("-m", "--model", help="model (default CHATGPT_DEFAULT_MODEL)")
    question.set_defaults(run=ask)

    commands.add_parser("accounts", help="the account pool's health").set_defaults(run=accounts)
    key_maker = commands.add_parser("keys", help="client keys (new|hash|create|list|update|revoke)",
                                    add_help=False)
    key_maker.add_argument("rest", nargs=argparse.REMAINDER)
    key_maker.set_defaults(run=make_keys)
    commands.add_parser("check", help="validate the configuration and reach the upstream once"
                        ).set_defaults(run=check)
    return top


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    terminal = Terminal()
    run = getattr(args, "run", serve)
    try:
        return run(args, terminal)
    except (ApiError, ConfigError) as error:
        return terminal.fail(error)
    except KeyboardInterrupt:
        terminal.note("interrupted")
        return 130
