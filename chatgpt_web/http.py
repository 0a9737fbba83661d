"""Outbound HTTP: the curl_cffi session factory and the one place where curl errors become ours.

Every upstream call of the service goes through a session made by `new_session()`, so that TLS
impersonation, the outbound proxy and DNS pinning (see upstream/endpoints.py) are never forgotten.
"""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

from curl_cffi import CurlOpt
from curl_cffi import requests as curl_requests
from curl_cffi.requests import exceptions as curl_errors

from .config import Config
from .errors import UpstreamError, UpstreamTimeout

Response = curl_requests.Response

# Far above any number of simultaneous streams a process serves (gunicorn caps them at
# GUNICORN_THREADS): a transfer must never wait in the pool's queue for a thread.
_MAX_TRANSFER_THREADS = 4096
_transfer_threads: ThreadPoolExecutor | None = None
_transfer_threads_lock = threading.Lock()


def _shared_transfer_threads() -> ThreadPoolExecutor:
    global _transfer_threads
    with _transfer_threads_lock:
        if _transfer_threads is None:
            _transfer_threads = ThreadPoolExecutor(_MAX_TRANSFER_THREADS,
                                                   thread_name_prefix="curl-transfer")
        return _transfer_threads


def _forget_transfer_threads() -> None:
    """In a forked child the parent's pool threads do not exist: start a new pool on demand."""
    global _transfer_threads, _transfer_threads_lock
    _transfer_threads, _transfer_threads_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_transfer_threads)


class Session(curl_requests.Session):
    """curl_cffi's Session, except where a streamed response's transfer runs.

    curl_cffi reads a `stream=True` response on a thread of the session's own executor, made on
    the session's first stream; with one session per answer that meant a new executor and a new
    thread per answer. Here every session of the process shares one pool, whose idle threads are
    reused, so an answer no longer pays for starting a thread.
    """

    @property
    def executor(self) -> ThreadPoolExecutor:
        return _shared_transfer_threads()


def new_session(config: Config, *, resolve: Sequence[str] = ()) -> Session:
    """A curl_cffi session impersonating the configured browser, through the configured proxy.

    `resolve` holds curl RESOLVE entries ("host:port:address") that pin a host to the addresses
    the SSRF guard checked, so that DNS cannot be changed between the check and the connection.
    """
    curl_options = {CurlOpt.RESOLVE: list(resolve)} if resolve else None
    return Session(
        impersonate=config.impersonate,
        proxy=config.proxy,
        curl_options=curl_options,
        allow_redirects=False,
        # The environment's http_proxy must not silently override CHATGPT_PROXY.
        trust_env=False,
    )


@contextlib.contextmanager
def upstream_errors(step: str) -> Iterator[None]:
    """Translate curl_cffi exceptions raised inside the block into UpstreamError / UpstreamTimeout.

    `step` names what was being done ("sentinel", "conversation", "login: password", ...) so the
    caller learns where it failed; URLs are not included because they may carry secrets.
    """
    try:
        yield
    except curl_errors.Timeout as exc:
        raise UpstreamTimeout(f"{step}: the upstream did not answer in time") from exc
    except curl_errors.DNSError as exc:
        raise UpstreamError(f"{step}: the upstream host name could not be resolved",
                            "upstream_unreachable") from exc
    except curl_errors.ProxyError as exc:
        raise UpstreamError(f"{step}: the outbound proxy failed", "proxy_error") from exc
    except curl_errors.ConnectionError as exc:
        raise UpstreamError(f"{step}: could not connect to the upstream",
                            "upstream_unreachable") from exc
    except curl_errors.RequestException as exc:
        # Mid-body failures (partial transfer, HTTP/2 stream reset) land here.
        raise UpstreamError(f"{step}: the upstream connection broke (curl error {exc.code})",
                            "upstream_stream_broken") from exc


def user_agent_for(impersonate: str) -> str:
    """The User-Agent curl_cffi sends for a desktop Chrome target (the PoW config must embed it)."""
    version = "".join(ch for ch in impersonate if ch.isdigit()) or "136"
    return (f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
            f"(KHTML, like Gecko) Chrome/{version}.0.0.0 Safari/537.36")
