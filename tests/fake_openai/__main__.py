"""Serve the fake OpenAI API on its own: python -m tests.fake_openai --port 8100 [--chunk-delay S].

Used by bench/relay.py, so that the fake's CPU is not the service's. Runs until killed.
"""
from __future__ import annotations

import argparse
import threading

from .server import FakeOpenAI

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--port", type=int, default=8100)
parser.add_argument("--chunk-delay", type=float, default=0.0,
                    help="seconds between two SSE events of a streamed answer")
args = parser.parse_args()
fake = FakeOpenAI()
fake.chunk_delay = args.chunk_delay
fake.start(args.port)
print(f"fake OpenAI API on {fake.base_url}", flush=True)
threading.Event().wait()
