"""The fake's endpoints: a Flask app built around one FakeOpenAI (the server's state)."""
from __future__ import annotations

import json
import socket
import time

from flask import Flask, Response, request

from . import answers, keys

SECRET_HEADERS = {  # what the official API sends that a relay must not pass on
    "openai-organization": keys.ORGANIZATION,
    "openai-project": keys.PROJECT,
    "openai-processing-ms": "42",
    "openai-version": "2020-10-01",
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-reset-requests": "6ms",
    "x-request-id": "req_fakeupstream0123",
}
CLOUDFLARE_PAGE = (b"<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
                   b"<body>cf-please-wait</body></html>")


def _json(status: int, body, headers: dict | None = None) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json",
                    headers={**SECRET_HEADERS, **(headers or {})})


def _sse(events, fault: str | None, fake) -> Response:
    """An SSE answer of `events` (dicts), with `fault` applied, ending in [DONE]."""
    connection = request.environ.get("werkzeug.socket")

    def drop_connection():
        # Shut the socket: the chunked terminator then never reaches the client, as when an
        # upstream's connection breaks mid-answer.
        connection.shutdown(socket.SHUT_RDWR)

    def generate():
        yield b""  # the headers go out now, before any event
        if fault == "empty_stream":
            return
        if fault == "first_event_error":
            yield b'data: {"error":{"message":"The server is overloaded (' \
                + keys.ORGANIZATION.encode() + b')","type":"server_error","param":null,' \
                b'"code":"overloaded"}}\n\n'
            return
        if fault and fault.startswith("slow_first_event:"):
            fake.stopping.wait(float(fault.split(":")[1]))
        for number, event in enumerate(events):
            if fault and fault.startswith("cut_after:") and number == int(fault.split(":")[1]):
                drop_connection()
                return
            if fault and fault.startswith("stall_after:") and number == int(fault.split(":")[1]):
                fake.stopping.wait(30)
                return
            if fake.chunk_delay and number:
                time.sleep(fake.chunk_delay)
            yield b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
        if fault != "no_done":
            yield b"data: [DONE]\n\n"
        if fault and fault.startswith("linger_after_done:"):  # the body ends that much later
            fake.stopping.wait(float(fault.split(":")[1]))
    return Response(generate(), mimetype="text/event-stream",
                    headers={**SECRET_HEADERS, "cache-control": "no-cache"})


def create_fake_app(fake) -> Flask:
    app = Flask("fake_openai")

    def bearer() -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" and token.strip() else None

    @app.before_request
    def record():
        body = request.get_data()
        try:
            decoded = json.loads(body) if request.is_json else None
        except ValueError:
            decoded = None
        fake.record(answers_request(request, bearer(), body, decoded))

    def answers_request(req, key, body, decoded):
        from .server import FakeRequest
        headers = {k.lower(): v for k, v in req.headers.items() if k.lower() != "authorization"}
        return FakeRequest(req.method, req.path, key, headers, body, decoded,
                           req.environ.get("REMOTE_PORT"))

    def gate(model: str):
        """The answer for a key or fault that refuses, else (None, the stream fault or None)."""
        key = bearer()
        refused = keys.refusal(key, model, fake.ratelimit_reset)
        if refused:
            return _json(*refused), None
        fault = fake.take_fault(key)
        if fault and fault.startswith("status:"):
            status = int(fault.split(":")[1])
            return _json(status, keys.error(f"Upstream trouble (HTTP {status}) for "
                                            f"{keys.ORGANIZATION}", "server_error", None)), None
        if fault == "html_page":
            return Response(CLOUDFLARE_PAGE, status=403, mimetype="text/html"), None
        if fault == "ratelimit":
            return _json(*keys.refusal("sk-fake-ratelimit", model, fake.ratelimit_reset)), None
        if fault == "bad_json":
            return Response(b"<html>upstream hiccup</html>", 200, mimetype="text/html"), None
        return None, fault

    def body() -> dict:
        data = request.get_json(silent=True)
        return data if isinstance(data, dict) else {}

    def gated(make) -> Response:
        """`make(body)` as JSON once the key and the body's model pass the gate."""
        data = body()
        refused, _ = gate(str(data.get("model")))
        return refused or _json(200, make(data))

    def stream_or_whole(data: dict, answer, fault: str | None) -> Response:
        """`answer` (answers.ChatAnswer or TextAnswer) as SSE chunks when `data` asks for a
        stream, else whole."""
        if data.get("stream"):
            options = data.get("stream_options") or {}
            return _sse(answer.chunks(options.get("include_usage") is True), fault, fake)
        return _json(200, answer.whole())

    def unknown_model(model: str) -> Response | None:
        if model not in fake.models_for(bearer()) and not model.startswith("ft:"):
            return _json(404, keys.error(f"The model `{model}` does not exist or you do not "
                                         "have access to it.", "invalid_request_error",
                                         "model_not_found"))
        return None

    @app.get("/v1/models")
    def list_models():
        refused, _ = gate("")
        return refused or _json(200, answers.model_list(fake.models_for(bearer())))

    @app.post("/v1/chat/completions")
    def chat():
        data = body()
        model = str(data.get("model"))
        refused, fault = gate(model)
        if refused:
            return refused
        if missing := unknown_model(model):
            return missing
        if not data.get("messages"):
            return _json(400, keys.error("Missing required parameter: 'messages'.",
                                         "invalid_request_error", "missing_required_parameter",
                                         "messages"))
        if str(data.get("messages")).find("context-overflow") >= 0:
            return _json(400, keys.error("This model's maximum context length is 128000 tokens.",
                                         "invalid_request_error", "context_length_exceeded",
                                         "messages"))
        return stream_or_whole(data, answers.ChatAnswer(data), fault)

    @app.post("/v1/completions")
    def completions():
        data = body()
        refused, fault = gate(str(data.get("model")))
        if refused:
            return refused
        return stream_or_whole(data, answers.TextAnswer(data), fault)

    @app.post("/v1/embeddings")
    def embeddings():
        return gated(answers.embeddings)

    @app.post("/v1/moderations")
    def moderations():
        return gated(answers.moderation)

    @app.post("/v1/images/generations")
    def images():
        return gated(answers.image)

    @app.post("/v1/images/edits")
    @app.post("/v1/images/variations")
    def image_edits():
        """Multipart, as the official endpoints: the pictures as `image` (or `image[]`) files;
        an edit may be JSON too, its pictures `images`: [{"image_url"} or {"file_id"}, ...]."""
        if request.is_json and request.path.endswith("/edits"):
            return json_image_edit()
        refused, _ = gate(request.form.get("model", ""))
        if refused:
            return refused
        if not request.files.getlist("image") and not request.files.getlist("image[]"):
            return _json(400, keys.error("Missing file", "invalid_request_error", None, "image"))
        return _json(200, answers.image(request.form.to_dict()))

    def json_image_edit() -> Response:
        data = body()
        refused, _ = gate(str(data.get("model", "")))
        if refused:
            return refused
        images = data.get("images")
        if not isinstance(images, list) or not images or not all(
                isinstance(image, dict) and (image.get("image_url") or image.get("file_id"))
                for image in images):
            return _json(400, keys.error("Missing required parameter: 'images'.",
                                         "invalid_request_error", "missing_required_parameter",
                                         "images"))
        return _json(200, answers.image(data))

    @app.post("/v1/audio/speech")
    def speech():
        data = body()
        refused, _ = gate(str(data.get("model")))
        if refused:
            return refused
        text = str(data.get("input", "")).encode()

        def audio():
            yield b"ID3fake-audio:"
            for piece in text.split(b" "):
                time.sleep(fake.speech_interval)
                yield piece + b"|"
        return Response(audio(), mimetype="audio/mpeg", headers=SECRET_HEADERS)

    @app.post("/v1/audio/transcriptions")
    def transcriptions():
        refused, _ = gate(request.form.get("model", ""))
        if refused:
            return refused
        upload = request.files.get("file")
        if upload is None:
            return _json(400, keys.error("Missing file", "invalid_request_error", None, "file"))
        content = upload.read()
        text = f"transcribed {len(content)} bytes of {upload.filename}"
        if request.form.get("response_format") == "text":
            return Response(text + "\n", mimetype="text/plain", headers=SECRET_HEADERS)
        return _json(200, {"text": text})

    return app
