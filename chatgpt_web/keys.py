"""Make client API keys for API_KEYS_FILE.

    python -m chatgpt_web.keys new [label]   print a new key (give it to the client) and the line
                                             for API_KEYS_FILE (its hash: the file holds no key)
    python -m chatgpt_web.keys hash [label]  read a key from standard input, print its file line
"""
from __future__ import annotations

import secrets
import sys

from .access import HASH_PREFIX, key_digest

KEY_PREFIX = "sk-cw-"


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
        print(__doc__.strip(), file=sys.stderr)
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
