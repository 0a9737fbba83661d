"""What one scoped client key may do: its `KeyPolicy`, read from and written to its JSON record.

A record is the same in KEYS_FILE and in the Store (keys made at run time):

    {"id": "alice", "hash": "sha256:<64 hex>", "label": "Alice's bot",
     "expires_at": "2027-01-01T00:00:00Z", "disabled": false,
     "models": ["gpt-4o-mini", "gpt-5*"], "backends": ["web", "relay"],
     "ips": ["203.0.113.0/24"], "rate": "60/minute", "concurrency": 4,
     "quota": {"requests": ["2000/day", "40000/month"], "tokens": "3000000/month"}}

Only `id` and `hash` are required; a missing scope means "no restriction". The record never holds
the key itself, only its SHA-256. README ("Scoped keys, quotas and usage") documents each field.
"""
from __future__ import annotations

import fnmatch
import ipaddress
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .config import IPNetwork, Rate, rate

HASH_PREFIX = "sha256:"
BACKENDS = ("web", "relay")
PERIODS = ("day", "month")
QUOTA_KINDS = ("requests", "tokens")
FIELDS = ("id", "hash", "label", "expires_at", "disabled", "models", "backends", "ips", "rate",
          "concurrency", "quota", "created_at")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")  # \Z: "$" takes a final newline
_QUOTA = re.compile(r"^\s*(\d{1,15})\s*/\s*(day|month)\s*$", re.IGNORECASE)
MAX_LIST = 200


def valid_id(key_id: str) -> bool:
    return bool(_ID.match(key_id))


class PolicyError(ValueError):
    """A record that is not a valid key policy; the message names the field (never the hash)."""


@dataclass(frozen=True)
class KeyPolicy:
    """The scopes and limits of one key. None / () for a scope means unrestricted."""

    id: str
    digest: str  # hex SHA-256 of the key
    label: str | None = None
    expires_at: datetime | None = None
    disabled: bool = False
    models: tuple[str, ...] | None = None
    backends: tuple[str, ...] | None = None
    ips: tuple[IPNetwork, ...] | None = None
    rate: Rate | None = None
    concurrency: int | None = None
    # (kind, period) -> limit, e.g. ("tokens", "month") -> 3000000
    quota: dict[tuple[str, str], int] = field(default_factory=dict)
    created_at: str | None = None
    source: str = "store"  # "file" (KEYS_FILE, read-only) or "store" (made at run time)

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and (now or datetime.now(UTC)) >= self.expires_at

    def allows_model(self, name: str) -> bool:
        """True if `name` matches the allow-list (exact public names or shell wildcards)."""
        if self.models is None:
            return True
        lowered = name.lower()
        return any(fnmatch.fnmatchcase(lowered, pattern.lower()) for pattern in self.models)

    def allows_backend(self, backend: str) -> bool:
        return self.backends is None or backend in self.backends

    def allows_ip(self, address: str) -> bool:
        if self.ips is None:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.ips)

    def scopes(self) -> dict:
        """The record without its hash: what /admin/keys lists and /v1/key shows its holder."""
        record = self.to_record()
        record.pop("hash")
        record["source"] = self.source
        return record

    def to_record(self) -> dict:
        """The JSON record (the KEYS_FILE entry / Store value)."""
        record: dict = {"id": self.id, "hash": HASH_PREFIX + self.digest}
        if self.label:
            record["label"] = self.label
        if self.expires_at is not None:
            record["expires_at"] = self.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.disabled:
            record["disabled"] = True
        if self.models is not None:
            record["models"] = list(self.models)
        if self.backends is not None:
            record["backends"] = list(self.backends)
        if self.ips is not None:
            record["ips"] = [str(network) for network in self.ips]
        if self.rate is not None:
            record["rate"] = _rate_text(self.rate)
        if self.concurrency is not None:
            record["concurrency"] = self.concurrency
        if self.quota:
            quota: dict[str, list[str]] = {}
            for (kind, period), limit in sorted(self.quota.items()):
                quota.setdefault(kind, []).append(f"{limit}/{period}")
            record["quota"] = quota
        if self.created_at:
            record["created_at"] = self.created_at
        return record

    @classmethod
    def from_record(cls, record: object, source: str = "store") -> KeyPolicy:
        """Parse a record. :raise PolicyError: naming the field that is wrong."""
        if not isinstance(record, dict):
            raise PolicyError("a key entry must be a JSON object")
        unknown = sorted(set(record) - set(FIELDS) - {"source"})
        if unknown:
            raise PolicyError(f"unknown field {unknown[0]!r}")
        key_id = record.get("id")
        if not isinstance(key_id, str) or not valid_id(key_id):
            raise PolicyError("'id' must be 1-64 letters, digits, '_', '.' or '-'")
        return cls(
            id=key_id, digest=_digest(record.get("hash")), label=_label(record.get("label")),
            expires_at=_expiry(record.get("expires_at")),
            disabled=_flag(record.get("disabled", False), "disabled"),
            models=_names(record.get("models"), "models"),
            backends=_backends(record.get("backends")), ips=_networks(record.get("ips")),
            rate=_rate(record.get("rate")), concurrency=_count(record.get("concurrency")),
            quota=_quota(record.get("quota")),
            created_at=record.get("created_at") if isinstance(record.get("created_at"), str)
            else None,
            source=source)


def _rate_text(value: Rate) -> str:
    names = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}
    return f"{value.requests}/{names[value.window]}"


def _digest(value: object) -> str:
    if not isinstance(value, str) or not value.lower().startswith(HASH_PREFIX):
        raise PolicyError("'hash' must be 'sha256:<64 hex digits>' (python -m chatgpt_web.keys "
                          "new prints it)")
    hex_part = value[len(HASH_PREFIX):].lower()
    if len(hex_part) != 64 or any(c not in "0123456789abcdef" for c in hex_part):
        # Never quoted: an operator may have pasted a clear key by mistake.
        raise PolicyError("'hash' must be 'sha256:<64 hex digits>'")
    return hex_part


def _label(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 200:
        raise PolicyError("'label' must be a text of at most 200 characters")
    return value.strip() or None


def _expiry(value: object) -> datetime | None:
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        moment = datetime.fromisoformat(value)
        # astimezone overflows for an offset that moves year 1 or 9999 out of range
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise PolicyError("'expires_at' must be an ISO 8601 time such as "
                          "2027-01-01T00:00:00Z") from None


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(f"'{name}' must be true or false")
    return value


def _names(value: object, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if (not isinstance(value, list) or len(value) > MAX_LIST
            or not all(isinstance(item, str) and 0 < len(item) <= 200 for item in value)):
        raise PolicyError(f"'{name}' must be a list of names (at most {MAX_LIST})")
    return tuple(value)


def _backends(value: object) -> tuple[str, ...] | None:
    names = _names(value, "backends")
    if names is not None and any(name not in BACKENDS for name in names):
        raise PolicyError("'backends' may only hold " + " and ".join(BACKENDS))
    return names


def _networks(value: object) -> tuple[IPNetwork, ...] | None:
    names = _names(value, "ips")
    if names is None:
        return None
    try:
        return tuple(ipaddress.ip_network(name, strict=False) for name in names)
    except ValueError:
        raise PolicyError("'ips' must hold IP addresses or networks (CIDR)") from None


def _rate(value: object) -> Rate | None:
    if value is None:
        return None
    try:
        parsed = rate(value) if isinstance(value, str) else None
    except ValueError:
        parsed = None
    if parsed is None:
        raise PolicyError("'rate' must look like 60/minute (per second, minute, hour or day)")
    return parsed


def _count(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100000:
        raise PolicyError("'concurrency' must be a whole number from 1 to 100000")
    return value


def _quota(value: object) -> dict[tuple[str, str], int]:
    if value is None:
        return {}
    if not isinstance(value, dict) or set(value) - set(QUOTA_KINDS):
        raise PolicyError("'quota' must be an object with 'requests' and/or 'tokens'")
    limits: dict[tuple[str, str], int] = {}
    for kind, spec in value.items():
        for item in spec if isinstance(spec, list) else [spec]:
            match = _QUOTA.match(item) if isinstance(item, str) else None
            if not match:
                raise PolicyError(f"'quota.{kind}' must look like 2000/day or 100000/month "
                                  "(or a list of both)")
            limit, period = int(match.group(1)), match.group(2).lower()
            if limit == 0:
                # Refused rather than guessed: elsewhere 0 often means "no limit".
                raise PolicyError(f"'quota.{kind}' is 0/{period}: a quota must be at least 1 "
                                  "(to stop a key set \"disabled\": true; for no limit leave "
                                  "the quota out)")
            limits[(kind, period)] = limit
    return limits
