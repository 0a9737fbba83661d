"""Run the emulator by hand: `python -m tests.emulator [--port 8765] [--tls [--http1]]`.

Prints the base URL and a fresh access token (with --tls, also the CA file to trust), then serves
until Ctrl-C.
"""
from __future__ import annotations

import argparse
import gc
import signal
import sys
import threading

from .server import Emulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free)")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--words-per-delta", type=int, default=1)
    parser.add_argument("--pow-difficulty", default="0fffff")
    parser.add_argument("--token-hours", type=float, default=24.0,
                        help="lifetime of the printed token")
    parser.add_argument("--easy", action="store_true",
                        help="no proof of work and no `p` needed: handy for curl by hand")
    parser.add_argument("--no-chunking", action="store_true",
                        help="one SSE event per network chunk (no seeded re-chunking)")
    parser.add_argument("--no-pings", action="store_true", help="no keep-alive ping events")
    parser.add_argument("--request-delay", type=float, default=0.0,
                        help="seconds every request waits before it is answered (a round trip "
                             "to a distant site)")
    parser.add_argument("--tls", action="store_true",
                        help="serve https:// with HTTP/2 offered by ALPN, as the site does, "
                             "under a certificate of a CA made at start (CHATGPT_CA_FILE)")
    parser.add_argument("--http1", action="store_true",
                        help="with --tls: offer HTTP/1.1 only")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    parser.add_argument("--dialect", choices=("2026", "2024"), default="2026",
                        help="2024: a mirror that only knows the 2024 paths (2026 ones answer 404)")
    args = parser.parse_args(argv)
    if args.http1 and not args.tls:
        parser.error("--http1 goes with --tls (without it the emulator speaks HTTP/1.1 only)")

    # No request log: only tests in the emulator's own process can read one (server.py).
    emulator = Emulator(quiet=not args.verbose, tls=args.tls, http2=not args.http1,
                        record_requests=False)
    emulator.switches.chunk_delay = args.chunk_delay
    emulator.switches.words_per_delta = args.words_per_delta
    emulator.switches.pow_difficulty = args.pow_difficulty
    emulator.switches.chunking = not args.no_chunking
    emulator.switches.pings = not args.no_pings
    emulator.switches.dialect = args.dialect
    if args.request_delay:
        emulator.switches.request_delays = (("", args.request_delay),)
    if args.easy:
        emulator.switches.pow_required = False
        emulator.switches.require_requirements_token = False
    emulator.start(args.port)
    # What start-up made (Flask, werkzeug, the emulator's modules) lives as long as the process:
    # frozen, a full collection no longer walks it in the middle of a burst.
    gc.freeze()
    # SIGTERM (how tests and benches stop this program: tests/servers.stop_process) ends it as
    # Ctrl-C does, through stop(), which removes the folder of the TLS certificates: killed
    # without it, every --tls run left one behind in the temporary directory. Set before the
    # start-up lines go out: a reader may stop the program as soon as it has read them.
    signal.signal(signal.SIGTERM, _stop_as_ctrl_c)
    try:
        lines = [f"CHATGPT_BASE_URL={emulator.url}"]
        if emulator.ca_file:
            lines.append(f"CHATGPT_CA_FILE={emulator.ca_file}")
        lines.append(f"ACCESS_TOKEN={emulator.mint_access_token(exp_in=args.token_hours * 3600)}")
        lines.append(f"API roots: {emulator.url}/backend-api and {emulator.url}/api. Ctrl-C stops.")
        # One write: unbuffered (PYTHONUNBUFFERED=1, as in the Dockerfile) print() writes a
        # line's text and its newline apart, and a program that reads these lines and then talks
        # to another thread of this process on stdout (bench/concurrency.py's collector clock)
        # saw that thread's line land inside the last one.
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()


def _stop_as_ctrl_c(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
