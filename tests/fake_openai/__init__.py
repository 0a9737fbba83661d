"""A local fake of the official OpenAI API (and of any OpenAI-compatible upstream).

Written from the public API reference. Modules: server (FakeOpenAI: start/stop/reset, the request
log, scripted faults), app (the Flask app and its endpoints), keys (what each scripted key does),
answers (the JSON objects and SSE chunks the endpoints send).

Keys behave by their name (keys.py): `sk-fake-good-*` serve, `sk-fake-invalid-*` get 401,
`sk-fake-quota-*` 429 insufficient_quota, `sk-fake-ratelimit-*` 429 with reset headers,
`sk-fake-org-*` a 500 naming an organisation. Faults are scripted per key on the server object:

    fake.fault("sk-fake-good-1", "cut_after:3", times=1)
"""
from .server import FakeOpenAI, FakeRequest

__all__ = ["FakeOpenAI", "FakeRequest"]
