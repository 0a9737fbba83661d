"""A local https image server for the image-URL tests: a self-signed certificate for 127.0.0.1
(made at start, written to a temporary directory) and a few fixed paths.

    /cat.png        a PNG (image/png)
    /page           an HTML page (text/html)
    /to-private     302 to https://localhost:<port>/cat.png (a name that resolves to loopback)
    /to-cat         302 to /cat.png on this server
    /big.png        a PNG with padding, larger than the tests' MAX_UPLOAD_BYTES
    /bad-length.png a PNG sent with `Content-Length: -5`, which is not HTTP
    /slow.png       a PNG whose headers and first bytes come at once, the rest only after
                    SLOW_HOLD seconds (or when `release` is set); `slow_sent` is set then
"""
from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed(directory: Path) -> tuple[Path, Path]:
    """(certificate, key) PEM files for 127.0.0.1, the certificate its own CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chatgpt_web test images")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "images-cert.pem", directory / "images-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


SLOW_HOLD = 5.0


class ImageServer:
    """Serves `images` ({path: (content type, body)}) over TLS on 127.0.0.1."""

    def __init__(self, directory: Path, images: dict[str, tuple[str, bytes]],
                 redirects: dict[str, str] | None = None):
        self.cert_file, key_file = self_signed(directory)
        self.images = images
        self.redirects = redirects or {}  # {path: Location sent as is}
        self.requests: list[str] = []
        self.release = threading.Event()
        self.slow_sent = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server hook's name
                server.requests.append(self.path)
                if self.path == "/to-private":
                    return self._redirect(f"https://localhost:{server.port}/cat.png")
                if self.path == "/to-cat":
                    return self._redirect("/cat.png")
                if self.path in server.redirects:
                    return self._redirect(server.redirects[self.path])
                if self.path == "/bad-length.png":
                    self.send_response(200)
                    self.send_header("Content-Type", "image/png")
                    self.send_header("Content-Length", "-5")
                    self.end_headers()
                    self.wfile.write(b"\x89PNG\r\n\x1a\n")
                    return
                if self.path == "/slow.png":
                    kind, body = server.images["/cat.png"]
                    self.send_response(200)
                    self.send_header("Content-Type", kind)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[:8])
                    self.wfile.flush()
                    server.release.wait(SLOW_HOLD)
                    server.slow_sent.set()
                    self.wfile.write(body[8:])
                    return
                found = server.images.get(self.path)
                if found is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                kind, body = found
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _redirect(self, location: str) -> None:
                self.send_response(302)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, key_file)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
