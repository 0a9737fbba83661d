"""Client API keys: the key ring the service checks, the keys file, and the command that makes keys.

Keys are held as SHA-256 digests, and a presented key is compared against every digest with
`hmac.compare_digest`, so neither the comparison's time nor a memory dump gives a key away.
API_KEYS_FILE holds one "sha256:<hex> [label]" line per key: the file holds no key either.

Scoped keys (KEYS_FILE, and keys made at run time through /admin/keys or this command, kept in
the Store under their hash) carry a `KeyPolicy`: label, expiry, allowed models and backends, IP
networks, their own rate limit, a concurrency cap and day/month quotas (key_policy.py).

    python -m chatgpt_web.keys new [label]   print a new key (give it to the client), the line
                                             for API_KEYS_FILE and the entry for KEYS_FILE
    python -m chatgpt_web.keys hash [label]  read a key from standard input, print its file line
    python -m chatgpt_web.keys create ID [--label L] [--models a,b] [--backends web] [--ips CIDR]
                              [--rate 60/minute] [--concurrency N] [--quota requests=100/day ...]
                              [--expires 2027-01-01T00:00:00Z]
                                             make a key in the Store (REDIS_URL or CACHE_DIR) now
    python -m chatgpt_web.keys list          the Store's and KEYS_FILE's keys (never a key)
    python -m chatgpt_web.keys update ID [options as create] [--disable | --enable]
    python -m chatgpt_web.keys revoke ID     forget a Store key: refused at once everywhere
"""
from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from .config import Config, read_json_file
from .errors import BadRequest, ConfigError, Conflict, NotFound
from .key_policy import KeyPolicy, PolicyError, valid_id
from .store import Store

KEY_PREFIX = "sk-cw-"
HASH_PREFIX = "sha256:"
MAX_KEY_LENGTH = 512


def key_digest(key: str) -> str:
    """The hex SHA-256 of a client key: what API_KEYS_FILE stores."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ClientKey:
    """A client key that matched. `id` is a short digest prefix (unscoped keys) or the id of the
    scoped key's record, safe to log and to show. `policy` is None for unscoped keys."""

    id: str
    label: str | None = None
    policy: KeyPolicy | None = None


STORE_PREFIX = "keys:v1:"
STORE_INDEX = STORE_PREFIX + "index"  # {id: hex digest, or None once revoked}


class KeyBook:
    """Scoped keys made at run time, kept in the Store under their hash (so every worker and,
    with Redis, every instance sees a new or revoked key at once), beside KEYS_FILE's."""

    def __init__(self, store: Store | Callable[[], Store],
                 file_policies: tuple[KeyPolicy, ...] = ()):
        # A callable is asked on first use: building the app must not open the Store.
        self._store = store
        self.file_policies = {policy.id: policy for policy in file_policies}

    @property
    def store(self) -> Store:
        if callable(self._store):
            self._store = self._store()
        return self._store

    def find(self, digest: str) -> KeyPolicy | None:
        """The Store key whose hash is `digest` (hex), or None."""
        record = self.store.get(STORE_PREFIX + digest)
        if record is None:
            return None
        try:
            return KeyPolicy.from_record(record)
        except PolicyError:
            return None  # a record this version cannot read grants nothing

    def _stored(self, key_id: str) -> KeyPolicy:
        digest = (self.store.get(STORE_INDEX) or {}).get(key_id)
        policy = self.find(digest) if digest else None
        if policy is None:
            if key_id in self.file_policies:
                raise Conflict(f"key {key_id!r} comes from KEYS_FILE: change it there",
                               "key_read_only")
            shown = key_id if len(key_id) <= 64 else key_id[:64] + "..."  # ids are at most 64
            raise NotFound(f"no client key has the id {shown!r}", "key_not_found")
        return policy

    def get(self, key_id: str) -> KeyPolicy:
        """The key `key_id` (file or Store). :raise NotFound: key_not_found."""
        if key_id in self.file_policies:
            return self.file_policies[key_id]
        return self._stored(key_id)

    def list(self) -> list[KeyPolicy]:
        """Every key, KEYS_FILE's first, then the Store's by id."""
        stored = []
        for key_id, digest in sorted((self.store.get(STORE_INDEX) or {}).items()):
            policy = self.find(digest) if digest else None
            if policy is not None and key_id not in self.file_policies:
                stored.append(policy)
        return [*self.file_policies.values(), *stored]

    def create(self, fields: dict) -> tuple[str, KeyPolicy]:
        """Make a new key with the scopes of `fields` (a record without `hash`).

        Returns the key (shown once, never stored) and its policy.
        :raise BadRequest: invalid_key_policy. :raise Conflict: key_exists.
        """
        if "hash" in fields:
            raise BadRequest("the service makes the key: do not send 'hash'",
                             "invalid_key_policy", param="hash")
        key = new_key()
        digest = key_digest(key)
        record = {**fields, "hash": "sha256:" + digest,
                  "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
        policy = _policy(record)
        if policy.id in self.file_policies:
            raise Conflict(f"KEYS_FILE already has a key {policy.id!r}", "key_exists")
        with self.store.lock(STORE_INDEX, 10.0, 15.0):  # two creations of one id: one wins
            if (self.store.get(STORE_INDEX) or {}).get(policy.id):
                raise Conflict(f"a key {policy.id!r} exists already", "key_exists")
            self.store.set(STORE_PREFIX + digest, policy.to_record())
            self.store.merge(STORE_INDEX, {policy.id: digest})
        return key, policy

    def update(self, key_id: str, changes: dict) -> KeyPolicy:
        """Change a Store key's scopes (a field set to null is removed).

        :raise NotFound: key_not_found. :raise Conflict: key_read_only (a KEYS_FILE key).
        :raise BadRequest: invalid_key_policy.
        """
        current = self._stored(key_id)
        if "hash" in changes or changes.get("id", key_id) != key_id:
            raise BadRequest("a key's id and hash cannot change (revoke it and make a new one)",
                             "invalid_key_policy")
        record = current.to_record()
        for name, value in changes.items():
            if value is None:
                record.pop(name, None)
            else:
                record[name] = value
        policy = _policy(record)
        self.store.set(STORE_PREFIX + policy.digest, policy.to_record())
        return policy

    def revoke(self, key_id: str) -> KeyPolicy:
        """Forget a Store key: the next request with it is refused, on every instance."""
        policy = self._stored(key_id)
        self.store.delete(STORE_PREFIX + policy.digest)
        self.store.merge(STORE_INDEX, {key_id: None})
        return policy


def _policy(record: dict) -> KeyPolicy:
    try:
        return KeyPolicy.from_record(record)
    except PolicyError as problem:
        raise BadRequest(f"invalid key: {problem}", "invalid_key_policy") from None


class KeyRing:
    """The accepted client keys: unscoped digests (API_KEYS, API_KEYS_FILE), KEYS_FILE's scoped
    keys, and (through `book`) the scoped keys made at run time."""

    def __init__(self, digests: dict[str, str | None], policies: tuple[KeyPolicy, ...] = (),
                 scoped: bool = False):
        # digest (bytes) -> label
        self._digests = {bytes.fromhex(digest): label for digest, label in digests.items()}
        self._policies = {bytes.fromhex(policy.digest): policy for policy in policies}
        self.policies = policies
        # KEYS_FILE is set: keys are on even while it (and the others) list none yet.
        self._scoped = scoped
        self.book: KeyBook | None = None

    @classmethod
    def from_config(cls, config: Config) -> KeyRing:
        """The keys of API_KEYS, API_KEYS_FILE and KEYS_FILE.

        :raise ConfigError: an unreadable or malformed file.
        """
        digests: dict[str, str | None] = {key_digest(key): None for key in config.api_keys}
        if config.api_keys_file:
            digests.update(read_keys_file(config.api_keys_file))
        policies = read_scoped_keys_file(config.keys_file) if config.keys_file else ()
        return cls(digests, policies, scoped=bool(config.keys_file))

    def attach(self, store: Store | Callable[[], Store]) -> KeyRing:
        """Also accept the scoped keys kept in `store` (or the Store a callable gives)."""
        self.book = KeyBook(store, self.policies)
        return self

    @property
    def enabled(self) -> bool:
        """True when keys are configured, so that requests must present one."""
        return bool(self._digests) or self._scoped

    def match(self, presented: str | None) -> ClientKey | None:
        """The ClientKey `presented` is, or None. Every configured digest is compared in constant
        time; a key made at run time is then looked up by its hash in the Store."""
        if not presented or len(presented) > MAX_KEY_LENGTH:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for candidate, label in self._digests.items():
            if hmac.compare_digest(candidate, digest):
                found = ClientKey(digest.hex()[:12], label)
        for candidate, policy in self._policies.items():
            if hmac.compare_digest(candidate, digest):
                found = ClientKey(policy.id, policy.label, policy)
        if found is None and self.book is not None:
            policy = self.book.find(digest.hex())
            if policy is not None:
                found = ClientKey(policy.id, policy.label, policy)
        return found


def read_scoped_keys_file(path: str) -> tuple[KeyPolicy, ...]:
    """Parse KEYS_FILE: {"keys": [record, ...]} (key_policy.py).

    :raise ConfigError: unreadable file, not JSON, a bad entry (named by its place) or two
        entries with one id or one hash.
    """
    document = read_json_file(path, "KEYS_FILE")
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ConfigError('KEYS_FILE must be {"keys": [...]}')
    policies = []
    for place, entry in enumerate(entries, 1):
        try:
            policies.append(KeyPolicy.from_record(entry, source="file"))
        except PolicyError as problem:
            raise ConfigError(f"KEYS_FILE key {place}{_named(entry)}: {problem}") from None
    if len({p.id for p in policies}) != len(policies):
        raise ConfigError("KEYS_FILE has two keys with one id")
    if len({p.digest for p in policies}) != len(policies):
        raise ConfigError("KEYS_FILE has two keys with one hash")
    return tuple(policies)


def _named(entry: object) -> str:
    """' (id "alice")' for an entry whose id is well-formed, so the operator finds it."""
    key_id = entry.get("id") if isinstance(entry, dict) else None
    return f' (id "{key_id}")' if isinstance(key_id, str) and valid_id(key_id) else ""


def read_keys_file(path: str) -> dict[str, str | None]:
    """Parse API_KEYS_FILE: "sha256:<hex> [label]" lines; blank lines and # comments are skipped.

    :raise ConfigError: unreadable file or a malformed line (never quoted: it may be a clear key).
    """
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise ConfigError(f"API_KEYS_FILE cannot be read ({type(exc).__name__})") from None
    digests: dict[str, str | None] = {}
    for number, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        digest, _, label = line.partition(" ")
        digest = digest.lower()
        hex_part = digest[len(HASH_PREFIX):]
        if (not digest.startswith(HASH_PREFIX) or len(hex_part) != 64
                or any(c not in "0123456789abcdef" for c in hex_part)):
            # Never quote the line: an operator may have pasted a clear key by mistake.
            raise ConfigError(f"API_KEYS_FILE line {number} is not 'sha256:<64 hex digits> "
                              "[label]' (make lines with: python -m chatgpt_web.keys new)")
        digests[hex_part] = label.strip() or None
    return digests


# --- the command line --------------------------------------------------------------------------
def new_key() -> str:
    """A new random client key (256 bits)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def file_line(key: str, label: str | None = None) -> str:
    """The API_KEYS_FILE line for `key`."""
    line = HASH_PREFIX + key_digest(key)
    return f"{line} {label}" if label else line


def policy_fields(args: argparse.Namespace) -> dict:
    """The record fields the create/update options give (only those given)."""
    fields: dict = {}
    if args.label is not None:
        fields["label"] = args.label
    if args.expires is not None:
        fields["expires_at"] = args.expires
    for name in ("models", "backends", "ips"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = [item.strip() for item in value.split(",") if item.strip()]
    if args.rate is not None:
        fields["rate"] = args.rate
    if args.concurrency is not None:
        fields["concurrency"] = args.concurrency
    if args.quota:
        quota: dict[str, list[str]] = {}
        for item in args.quota:
            kind, _, limit = item.partition("=")
            quota.setdefault(kind.strip(), []).append(limit.strip())
        fields["quota"] = quota
    return fields


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m chatgpt_web.keys")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("create", "update"):
        command = commands.add_parser(name)
        command.add_argument("id")
        command.add_argument("--label")
        command.add_argument("--expires", help="ISO 8601 time, e.g. 2027-01-01T00:00:00Z")
        command.add_argument("--models", help="comma-separated public names or wildcards")
        command.add_argument("--backends", help="web and/or relay, comma-separated")
        command.add_argument("--ips", help="comma-separated addresses or CIDR networks")
        command.add_argument("--rate", help="e.g. 60/minute")
        command.add_argument("--concurrency", type=int)
        command.add_argument("--quota", action="append",
                             help="requests=2000/day, tokens=3000000/month (repeatable)")
        if name == "update":
            command.add_argument("--disable", action="store_true")
            command.add_argument("--enable", action="store_true")
    commands.add_parser("list")
    commands.add_parser("revoke").add_argument("id")
    return parser


def _book() -> KeyBook:
    from .store import open_store  # the Store of this machine's (or Redis's) settings
    config = Config.from_env()
    return KeyRing.from_config(config).attach(open_store(config)).book


def manage(argv: list[str]) -> int:
    """create / list / update / revoke: the Store's keys, as /admin/keys manages them."""
    args = _parser().parse_args(argv)
    book = _book()
    try:
        if args.command == "list":
            for policy in book.list():
                print(json.dumps(policy.scopes()))
        elif args.command == "create":
            key, policy = book.create({"id": args.id, **policy_fields(args)})
            print(f"key (give it to the client; it is not stored anywhere): {key}")
            print(json.dumps(policy.scopes()))
        elif args.command == "update":
            changes = policy_fields(args)
            if args.disable or args.enable:
                changes["disabled"] = bool(args.disable)
            print(json.dumps(book.update(args.id, changes).scopes()))
        else:
            print(f"revoked {book.revoke(args.id).id}")
    except (BadRequest, NotFound, Conflict) as error:
        print(f"{error.code}: {error.message}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    """Command-line entry point; returns the exit status."""
    if argv and argv[0] in ("create", "list", "update", "revoke"):
        return manage(argv)
    if not argv or argv[0] not in ("new", "hash"):
        print(__doc__.strip().split("\n\n")[-1], file=sys.stderr)
        return 2
    label = " ".join(argv[1:]).strip() or None
    if argv[0] == "new":
        key = new_key()
        print(f"key (give it to the client; it is not stored anywhere): {key}")
        print(f"line for API_KEYS_FILE: {file_line(key, label)}")
        entry = {"id": _entry_id(label), "hash": HASH_PREFIX + key_digest(key)}
        if label:
            entry["label"] = label
        print(f"entry for KEYS_FILE: {json.dumps(entry)}")
        return 0
    key = sys.stdin.readline().strip()
    if not key:
        print("no key on standard input", file=sys.stderr)
        return 2
    print(file_line(key, label))
    return 0


def _entry_id(label: str | None) -> str:
    cleaned = "".join(c if c.isalnum() or c in "_.-" else "-" for c in (label or ""))[:64]
    return cleaned.strip("-.") or "key-" + secrets.token_hex(4)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
