"""A local fake of the ChatGPT web backend speaking the real protocol (docs/protocol.md).

Modules: server (Emulator: start/stop/reset, request log, tokens), app (Flask factory), backend
(the API blueprint), sentinel (requirements tokens, PoW check), turns (request validation and tree
updates), conversations (the tree store), streams (legacy and v1 writers, chunking), failures
(canned upstream errors), switches (the knobs), tokens (test JWTs), auth_pages (the login pages
of docs/protocol-auth.md and their own switches, `Emulator.auth`), tls (the same app over TLS
with HTTP/2, `Emulator(tls=True)`).
"""
from .server import Emulator, RecordedRequest
from .switches import Switches

__all__ = ["Emulator", "RecordedRequest", "Switches"]
