"""Account health alerts: a JSON POST to ALERT_WEBHOOK_URL before users notice a dying pool.

Conditions, read from the pool's own records (pool.report()):

    expiring         an account's access token expires within a day
    dead             an account was refused for good (its sign-in failed, it was banned)
    refresh_failing  REFRESH_FAILURES renewals of an account's token failed in a row
    refused          the upstream refused an account REFUSALS times in a row (401/403/429)
    degraded         the downgrade banner showed, or more than half of an account's answers in
                     the last one to two hours (four at least) came from another model than
                     asked (pool.py: DEGRADED_SHARE, DEGRADED_MIN_ANSWERS)
    few_healthy      fewer than ALERT_MIN_HEALTHY accounts are in service (pool-wide)

Each condition is sent once, then again only while it lasts, after a backoff that doubles from an
hour up to a day; a condition that clears is forgotten, so its return is sent at once. The records
live in the Store, so several workers and instances send each alert once between them. The pool is
looked at no more than once per ALERT_INTERVAL seconds (a Store window decides which worker looks).

The webhook goes through the same SSRF guard as a caller's reverse_proxy: every address its host
resolves to must be public, and the connection is pinned to the checked addresses. An operator's
own collector on a private address is listed in ALERT_WEBHOOK_ALLOW (URL prefixes). The body holds
account labels, codes and times only: never a token, an email or a prompt.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from urllib.parse import urlsplit

from .store import Store
from .upstream.endpoints import is_allowed_proxy, is_public, system_resolver

log = logging.getLogger(__name__)
PREFIX = "alerts:v1:"
FIRST_BACKOFF = 3600
MAX_BACKOFF = 86400
EXPIRY_WARNING = 86400
SEND_TIMEOUT = 5
REFRESH_FAILURES = 2
REFUSALS = 3


class AlertWatcher:
    """Turns the pool's health into alerts, each sent once per condition with backoff."""

    def __init__(self, pool, store: Store, send: Callable[[dict], None], *, min_healthy: int = 1,
                 interval: int = 60, clock: Callable[[], float] = time.time):
        self.pool = pool
        self.store = store
        self.send = send
        self.min_healthy = min_healthy
        self.interval = interval
        self._clock = clock

    def conditions(self) -> dict[str, dict]:
        """The conditions present now: name -> the alert's details."""
        now = self._clock()
        rows = self.pool.report()
        found: dict[str, dict] = {}
        for row in rows:
            account = row["id"]
            expires = row.get("token_expires_at")
            if row["status"] == "dead":
                found[f"dead:{account}"] = {"condition": "dead", "account": account,
                                            "last_error": row.get("last_error")}
            elif expires and now < expires <= now + EXPIRY_WARNING:
                found[f"expiring:{account}"] = {"condition": "expiring", "account": account,
                                                "token_expires_at": expires}
            if row["status"] != "dead":
                if row.get("refresh_failures", 0) >= REFRESH_FAILURES:
                    found[f"refresh_failing:{account}"] = {
                        "condition": "refresh_failing", "account": account,
                        "refresh_failures": row["refresh_failures"],
                        "refresh_error": row.get("refresh_error")}
                if row.get("refusals", 0) >= REFUSALS:
                    found[f"refused:{account}"] = {"condition": "refused", "account": account,
                                                   "refusals": row["refusals"],
                                                   "last_error": row.get("last_error")}
            if row.get("degraded"):
                found[f"degraded:{account}"] = {"condition": "degraded", "account": account,
                                                "downgraded": row.get("downgraded"),
                                                "model_share": row.get("model_share")}
        healthy = sum(1 for row in rows if row["status"] in ("healthy", "resting"))
        if healthy < self.min_healthy:
            found["few_healthy"] = {"condition": "few_healthy", "healthy": healthy,
                                    "accounts": len(rows), "min_healthy": self.min_healthy}
        return found

    def due(self) -> list[tuple[str, dict]]:
        """(condition name, alert) to send now; their records are updated as sent (under the
        Store lock, so that one worker sends each)."""
        now = self._clock()
        present = self.conditions()
        alerts = []
        with self.store.lock(PREFIX + "records", 10.0, 15.0):
            records = self.store.get(PREFIX + "records") or {}
            for name in [name for name in records if name not in present]:
                del records[name]  # cleared: its return is news again
            for name, details in present.items():
                record = records.get(name)
                if record is not None and now < record["next_at"]:
                    continue
                sent = record["sent"] + 1 if record else 1
                backoff = min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** (sent - 1))
                records[name] = {"sent": sent, "next_at": now + backoff}
                alerts.append((name, {**details, "repeat": sent - 1, "at": int(now)}))
            self.store.set(PREFIX + "records", records)
        return alerts

    def _forget(self, name: str) -> None:
        with self.store.lock(PREFIX + "records", 10.0, 15.0):
            records = self.store.get(PREFIX + "records") or {}
            if records.pop(name, None) is not None:
                self.store.set(PREFIX + "records", records)

    def run(self) -> int:
        """Look at the pool and send what is due; the number of alerts delivered. An alert the
        webhook did not take is forgotten as sent, so the next look tries it again."""
        delivered = 0
        for name, alert in self.due():
            try:
                self.send(alert)
                delivered += 1
            except Exception as error:  # a webhook down must not break a request
                log.warning("alert %s not delivered (%s)", alert["condition"],
                            type(error).__name__)
                self._forget(name)
        return delivered

    def maybe_run_in_background(self) -> None:
        """At most once per `interval` across all workers (a Store window), run() in a thread."""
        count, _ = self.store.hit(PREFIX + "window", self.interval)
        if count == 1:
            threading.Thread(target=self.run, name="alerts", daemon=True).start()


class WebhookSender:
    """POSTs an alert as JSON to a URL that passed the SSRF guard (or is allow-listed)."""

    def __init__(self, url: str, allowed: tuple[str, ...], session_factory,
                 resolver=system_resolver):
        self.url = url
        self.allowed = allowed
        self._session_factory = session_factory  # resolve entries -> a curl_cffi Session
        self._resolver = resolver

    def pins(self) -> list[str]:
        """curl RESOLVE entries pinning the host to its checked addresses.

        :raise ValueError: the host resolves to a non-public address and is not allow-listed.
        """
        if is_allowed_proxy(self.url, self.allowed):
            return []
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses = self._resolver(parts.hostname, port)
        if not addresses or not all(is_public(address) for address in addresses):
            raise ValueError("ALERT_WEBHOOK_URL resolves to a non-public address; list it in "
                             "ALERT_WEBHOOK_ALLOW to allow it")
        return [f"{parts.hostname}:{port}:{','.join(addresses)}"]

    def __call__(self, alert: dict) -> None:
        session = self._session_factory(self.pins())
        try:
            response = session.post(self.url, json={"source": "chatgpt_web", **alert},
                                    timeout=SEND_TIMEOUT, allow_redirects=False)
            if response.status_code >= 300:
                raise RuntimeError(f"webhook answered {response.status_code}")
        finally:
            session.close()
