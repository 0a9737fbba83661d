"""Client API keys: the key ring the service checks, the keys file, and the command that makes keys.

Keys are held as SHA-256 digests, and a presented key is compared against every digest with
`hmac.compare_digest`, so neither the comparison's time nor a memory dump gives a key away.
API_KEYS_FILE holds one "sha256:<hex> [label]" line per key: the file holds no key either.

    python -m chatgpt_web.keys new [label]   print a new key (give it to the client) and the line
                                             for API_KEYS_FILE (its hash: the file holds no key)
    python -m chatgpt_web.keys hash [label]  read a key from standard input, print its file line
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import sys
from dataclasses import dataclass

from .config import Config
from .errors import ConfigError

KEY_PREFIX = "sk-cw-"
HASH_PREFIX = "sha256:"
MAX_KEY_LENGTH = 512


def key_digest(key: str) -> str:
    """The hex SHA-256 of a client key: what API_KEYS_FILE stores."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ClientKey:
    """A client key that matched. `id` is a short digest prefix, safe to log and to show."""

    id: str
    label: str | None = None


class KeyRing:
    """The accepted client keys, as digests."""

    def __init__(self, digests: dict[str, str | None]):
        # digest (hex) -> label
        self._digests = {bytes.fromhex(digest): label for digest, label in digests.items()}

    @classmethod
    def from_config(cls, config: Config) -> KeyRing:
        """The keys of API_KEYS plus those of API_KEYS_FILE.

        :raise ConfigError: unreadable file or a line that is not "sha256:<64 hex> [label]".
        """
        digests: dict[str, str | None] = {key_digest(key): None for key in config.api_keys}
        if config.api_keys_file:
            digests.update(read_keys_file(config.api_keys_file))
        return cls(digests)

    @property
    def enabled(self) -> bool:
        """True when keys are configured, so that requests must present one."""
        return bool(self._digests)

    def match(self, presented: str | None) -> ClientKey | None:
        """The ClientKey `presented` is, or None. Every digest is compared, in constant time."""
        if not presented or len(presented) > MAX_KEY_LENGTH:
            return None
        digest = hashlib.sha256(presented.encode()).digest()
        found = None
        for candidate, label in self._digests.items():
            if hmac.compare_digest(candidate, digest):
                found = ClientKey(digest.hex()[:12], label)
        return found


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


def main(argv: list[str]) -> int:
    """Command-line entry point; returns the exit status."""
    if not argv or argv[0] not in ("new", "hash"):
        print(__doc__.strip().split("\n\n")[-1], file=sys.stderr)
        return 2
    label = " ".join(argv[1:]).strip() or None
    if argv[0] == "new":
        key = new_key()
        print(f"key (give it to the client; it is not stored anywhere): {key}")
        print(f"line for API_KEYS_FILE: {file_line(key, label)}")
        return 0
    key = sys.stdin.readline().strip()
    if not key:
        print("no key on standard input", file=sys.stderr)
        return 2
    print(file_line(key, label))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
