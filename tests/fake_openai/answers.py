"""The objects the fake sends: completions, chunks, embeddings, moderations, images, models.

The answer text is "Echo: " and the last user text, so tests can predict it; usage counts words.
"""
from __future__ import annotations

import base64
import hashlib
import json
import struct
import uuid

SNAPSHOT_SUFFIX = "-2024-07-18"
FINGERPRINT = "fp_fake0123"
MODERATION_MARKER = "forbidden-word"
CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence")


CREATED = 1733300000  # every answer's `created`: answers to one request are byte-identical


def answer_id(prefix: str, body: dict) -> str:
    """An id derived from the request (whatever its stream_options), so that the same request gets
    the same bytes back."""
    asked = {k: v for k, v in body.items() if k != "stream_options"}
    digest = hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()
    return prefix + digest[:24]


def served_model(model: str) -> str:
    """The model name answers carry: a dated snapshot of the requested name, as OpenAI does."""
    return model + SNAPSHOT_SUFFIX


def last_user_text(messages) -> str:
    for message in reversed(messages if isinstance(messages, list) else []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
            return str(content)
    return ""


def words(text: str) -> int:
    return max(1, len(text.split()))


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def pieces(text: str) -> list[str]:
    """The text in stream-sized pieces: one per word (with its leading space)."""
    parts = text.split(" ")
    return [parts[0]] + [" " + part for part in parts[1:]]


class ChatAnswer:
    """One chat completion, as a whole object or as chunks."""

    def __init__(self, body: dict):
        self.model = served_model(str(body.get("model")))
        self.prompt_text = last_user_text(body.get("messages"))
        self.text = "Echo: " + self.prompt_text
        self.id = answer_id("chatcmpl-", body)
        self.created = CREATED
        self.usage = usage(words(self.prompt_text), words(self.text))

    def whole(self) -> dict:
        return {"id": self.id, "object": "chat.completion", "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": self.text,
                                                     "refusal": None, "annotations": []},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": self.usage, "service_tier": "default",
                "system_fingerprint": FINGERPRINT}

    def chunk(self, delta: dict | None, finish: str | None = None,
              include_usage: bool = False) -> dict:
        chunk = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                 "model": self.model, "service_tier": "default",
                 "system_fingerprint": FINGERPRINT,
                 "choices": [] if delta is None else [
                     {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            chunk["usage"] = self.usage if delta is None else None
        return chunk

    def chunks(self, include_usage: bool) -> list[dict]:
        out = [self.chunk({"role": "assistant", "content": "", "refusal": None},
                          include_usage=include_usage)]
        out += [self.chunk({"content": piece}, include_usage=include_usage)
                for piece in pieces(self.text)]
        out.append(self.chunk({}, "stop", include_usage=include_usage))
        if include_usage:
            out.append(self.chunk(None, include_usage=True))
        return out


class TextAnswer:
    """One legacy text completion (/v1/completions)."""

    def __init__(self, body: dict):
        prompt = body.get("prompt")
        self.prompt_text = " ".join(prompt) if isinstance(prompt, list) else str(prompt)
        self.text = "Echo: " + self.prompt_text
        self.model = str(body.get("model"))
        self.id = answer_id("cmpl-", body)
        self.created = CREATED
        self.usage = usage(words(self.prompt_text), words(self.text))

    def whole(self) -> dict:
        return {"id": self.id, "object": "text_completion", "created": self.created,
                "model": self.model,
                "choices": [{"text": self.text, "index": 0, "logprobs": None,
                             "finish_reason": "stop"}],
                "usage": self.usage}

    def chunks(self, include_usage: bool) -> list[dict]:
        def chunk(text, finish=None):
            return {"id": self.id, "object": "text_completion", "created": self.created,
                    "model": self.model, "choices": [{"text": text, "index": 0,
                                                      "logprobs": None, "finish_reason": finish}]}
        out = [chunk(piece) for piece in pieces(self.text)] + [chunk("", "stop")]
        if include_usage:
            out.append({"id": self.id, "object": "text_completion", "created": self.created,
                        "model": self.model, "choices": [], "usage": self.usage})
        return out


def embedding_vector(text: str, dimensions: int = 8) -> list[float]:
    """A deterministic small vector for `text`."""
    seed = sum(text.encode()) or 1
    return [((seed * (i + 3)) % 97) / 97.0 for i in range(dimensions)]


def embeddings(body: dict) -> dict:
    inputs = body.get("input")
    inputs = inputs if isinstance(inputs, list) else [inputs]
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    for index, item in enumerate(inputs):
        vector = embedding_vector(str(item), int(body.get("dimensions") or 8))
        value = (base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                 if as_base64 else vector)
        data.append({"object": "embedding", "index": index, "embedding": value})
    tokens = sum(words(str(item)) for item in inputs)
    return {"object": "list", "data": data, "model": str(body.get("model")),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def moderation(body: dict) -> dict:
    inputs = body.get("input")
    inputs = inputs if isinstance(inputs, list) else [inputs]
    results = []
    for item in inputs:
        flagged = MODERATION_MARKER in json.dumps(item)
        results.append({"flagged": flagged,
                        "categories": {c: flagged and c == "violence" for c in CATEGORIES},
                        "category_scores": {c: 0.9 if flagged and c == "violence" else 0.001
                                            for c in CATEGORIES}})
    return {"id": "modr-" + uuid.uuid4().hex[:24],
            "model": str(body.get("model") or "omni-moderation-latest"), "results": results}


def image(body: dict) -> dict:
    count = int(body.get("n") or 1)
    if body.get("response_format") == "b64_json":
        data = [{"b64_json": base64.b64encode(b"\x89PNG fake image").decode()}] * count
    else:
        data = [{"url": f"https://images.example.invalid/{uuid.uuid4().hex}.png"}] * count
    return {"created": CREATED, "data": data}


def model_list(names) -> dict:
    return {"object": "list", "data": [{"id": name, "object": "model", "created": 1700000000,
                                        "owned_by": "system"} for name in names]}
