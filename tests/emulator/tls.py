"""The emulator over TLS, offering HTTP/2 by ALPN with HTTP/1.1 for a client that asks for it,
as chatgpt.com's front does: `Emulator(tls=True)`.

The certificate is made at start by a throw-away CA (trustme); `ca_file` is that CA's PEM file,
which the service is given as CHATGPT_CA_FILE, exactly as an operator trusts a private CA.

Hypercorn speaks TLS, ALPN, HTTP/2 (flow control, stream multiplexing, HPACK: the `h2` library)
and HTTP/1.1 on one asyncio loop, in a thread of its own. The Flask app stays a WSGI app and runs
as it does under werkzeug: each request in a thread of its own (`WsgiBridge`), so a request the
app holds (a chunk delay, `switches.request_delays`) never holds another stream of the same
connection. Hypercorn's own WSGI adapter runs apps on the loop's default executor (a handful of
threads, which would serialise a few concurrent streams) and does not notice a client that left;
this bridge does both as werkzeug's server does.

Each request is recorded with its `http_version` ("HTTP/2" or "HTTP/1.1") and `client_port` (the
client's end of its connection: streams of one HTTP/2 connection share it). One switch differs
from the plain server: `drop_mode="abort"` ends the body cleanly here (there is no socket of one
stream to cut; an HTTP/2 stream would be reset, which the ASGI interface cannot ask for).
"""
from __future__ import annotations

import asyncio
import logging
import socket
import sys
import tempfile
import threading
import weakref
from io import BytesIO
from pathlib import Path

import trustme
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config, Sockets

# Seconds a WSGI thread waits for the loop to take one piece of its answer (HTTP/2 flow control
# may hold it while the client reads slowly); longer, and the client is taken as gone.
SEND_SECONDS = 60
log = logging.getLogger(__name__)


class TlsServer:
    """Serves a WSGI `app` on https://127.0.0.1:`port` (0: a free one) from a daemon thread."""

    def __init__(self, app, port: int = 0, *, http2: bool = True, keep_alive: float = 60,
                 backlog: int = 4096, max_body_bytes: int = 64 * 1024 * 1024,
                 quiet: bool = True) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="chatgpt-emulator-tls-")
        folder = Path(self._directory.name)
        authority = trustme.CA(organization_name="chatgpt_web emulator test CA")
        self.ca_file = str(folder / "ca.pem")
        authority.cert_pem.write_to_path(self.ca_file)
        server_pem = str(folder / "server.pem")  # its key and certificate chain
        authority.issue_cert("127.0.0.1", "localhost").private_key_and_cert_chain_pem \
            .write_to_path(server_pem)
        self.cert_file = server_pem  # the hand-off WebSocket (topics.py) serves wss:// with it

        self._listener = _Listener()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(backlog)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        config = Config()
        config.certfile = config.keyfile = server_pem
        config.alpn_protocols = ["h2", "http/1.1"] if http2 else ["http/1.1"]
        config.backlog = backlog
        config.keep_alive_timeout = keep_alive
        config.accesslog = None if quiet else logging.getLogger("tests.emulator.access")
        config.errorlog = log
        config.loglevel = "WARNING" if quiet else "INFO"
        self._bridge = WsgiBridge(app, max_body_bytes)
        self._config = config
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,),
                                        name="chatgpt-emulator-tls", daemon=True)
        self._thread.start()
        if not started.wait(30):
            raise RuntimeError("the TLS emulator did not start")

    def _serve(self, started: threading.Event) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stopping = asyncio.Event()
            self._loop.call_soon(started.set)
            # hypercorn.asyncio.serve() with sockets of our own (it makes its own from binds)
            await worker_serve(ASGIWrapper(self._bridge), self._config,
                               sockets=Sockets([self._listener], [], []),
                               shutdown_trigger=self._stopping.wait)
        asyncio.run(main())

    def stop(self) -> None:
        """Stop accepting, and cut every open connection, as a site that went away would (a
        TLS close would wait for each client's own close_notify)."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:  # the loop closed meanwhile
                pass
        for connection in list(self._listener.accepted):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=10)
        self._directory.cleanup()


class _Listener(socket.socket):
    """The listening socket; it remembers the connections it accepted, for stop() to cut."""

    def __init__(self) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.accepted: weakref.WeakSet[socket.socket] = weakref.WeakSet()

    def accept(self):
        connection, address = super().accept()
        self.accepted.add(connection)
        return connection, address


class WsgiBridge:
    """An ASGI app running a WSGI app: the request body read whole, then the WSGI app in a new
    thread, each piece of its answer handed to the loop as it is produced. A client that leaves
    (its stream reset, its connection closed) closes the app's iterator before its next piece,
    as a failed write does under werkzeug."""

    def __init__(self, app, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await send({"type": "http.response.start", "status": 413, "headers": []})
                await send({"type": "http.response.body", "body": b""})
                return
            if not message.get("more_body"):
                break
        loop = asyncio.get_running_loop()
        left, done = threading.Event(), loop.create_future()

        async def watch() -> None:  # the next message is the client's disconnect
            while (await receive())["type"] != "http.disconnect":
                pass
            left.set()

        watcher = asyncio.ensure_future(watch())
        threading.Thread(target=self._run, daemon=True,
                         args=(_environ(scope, bytes(body)), send, loop, left, done)).start()
        try:
            await done
        finally:
            watcher.cancel()

    def _run(self, environ: dict, send, loop, left: threading.Event, done) -> None:
        head: dict = {}

        def deliver(message: dict) -> None:
            asyncio.run_coroutine_threadsafe(send(message), loop).result(SEND_SECONDS)

        def start_response(status: str, headers, exc_info=None):
            if exc_info and head.get("sent"):
                raise exc_info[1].with_traceback(exc_info[2])
            head["start"] = {"type": "http.response.start", "status": int(status.split()[0]),
                             "headers": [(name.lower().encode("latin-1"), value.encode("latin-1"))
                                         for name, value in headers]}
            return lambda data: None  # (the emulator's app never writes this way)

        try:
            chunks = self.app(environ, start_response)
            try:
                for data in chunks:
                    if left.is_set():
                        return  # chunks.close() below: GeneratorExit where the app yields
                    if not head.get("sent"):
                        deliver(head["start"])
                        head["sent"] = True
                    if data:
                        deliver({"type": "http.response.body", "body": data, "more_body": True})
                if not head.get("sent") and not left.is_set():
                    deliver(head["start"])
                deliver({"type": "http.response.body", "body": b"", "more_body": False})
            finally:
                if hasattr(chunks, "close"):
                    chunks.close()
        except Exception:  # noqa: BLE001 - a client gone mid-answer, or the app's own error
            if not left.is_set() and not loop.is_closed():
                log.exception("Error on request %s %s", environ["REQUEST_METHOD"],
                              environ["PATH_INFO"])
        finally:
            if not loop.is_closed():
                try:
                    loop.call_soon_threadsafe(_resolve, done)
                except RuntimeError:
                    pass


def _resolve(done) -> None:
    if not done.done():
        done.set_result(None)


def _environ(scope, body: bytes) -> dict:
    """The WSGI environ werkzeug's server would make for this request (PEP 3333)."""
    server = scope.get("server") or ("127.0.0.1", 443)
    client = scope.get("client") or ("", 0)
    environ = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": "",
        "PATH_INFO": scope["path"].encode("utf-8").decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "REMOTE_ADDR": client[0],
        "REMOTE_PORT": client[1],
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "https"),
        "wsgi.input": BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    authority = None
    for raw_name, raw_value in scope["headers"]:
        if raw_name.startswith(b":"):  # HTTP/2's pseudo-headers: :authority is the Host
            if raw_name == b":authority":
                authority = raw_value.decode("latin-1")
            continue
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        if name not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = "HTTP_" + name
        value = raw_value.decode("latin-1")
        if name in environ:  # repeated headers, as werkzeug joins them (cookies with "; ")
            value = environ[name] + ("; " if name == "HTTP_COOKIE" else ",") + value
        environ[name] = value
    if authority is not None and "HTTP_HOST" not in environ:
        environ["HTTP_HOST"] = authority
    if "CONTENT_LENGTH" not in environ and body:
        environ["CONTENT_LENGTH"] = str(len(body))
    return environ
