"""What one upstream TLS connection costs the service in memory and CPU, by where its CAs come from.

    python bench/tls_memory.py                 # 200 handles per trust source
    python bench/tls_memory.py --handles 500

Every open answer holds a curl handle of its own, with its own multi handle (curl_transfer.py),
and curl builds a trust store per multi handle: from a bundle file it parses every certificate
in it, from a directory of certificates named by subject hash it reads one when a chain needs it.
This script starts the repository's emulator over TLS with HTTP/2 (as the site), then for each
trust source, in a fresh process, opens `--handles` sessions of the service's transport
(transport.new_session), each making one request on a connection of its own and keeping it open,
and prints what they added to the process: resident memory per handle and CPU per handle (the
handshake, and the building of the store). The trust sources:

* `CA file, 1 CA`: CHATGPT_CA_FILE naming the emulator's CA alone (bench/concurrency.py --http2);
* `CA file, public CAs`: CHATGPT_CA_FILE naming the operating system's bundle with the emulator's
  CA appended: what every handle cost before CHATGPT_CA_DIR, with the public roots curl_cffi
  loads by default;
* `CA dir, public CAs`: CHATGPT_CA_DIR naming a directory of the same certificates linked by
  subject hash (`openssl rehash`), as the operating system's /etc/ssl/certs is: the default
  where that directory is there (config.os_ca_directory).

Loopback only; at most --max-handles handles.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

OS_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


def resident_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def measure(url: str, env: dict[str, str], handles: int) -> dict:
    """In this process: `handles` sessions, each with one request answered and its connection
    kept; what they added."""
    from chatgpt_web.config import Config
    from chatgpt_web.transport import new_session

    config = Config.from_env(env)
    first = new_session(config)  # the transport's own start-up, outside the measure
    first.get(url)
    before, cpu_before = resident_mb(), time.process_time()
    sessions = []
    for _ in range(handles):
        session = new_session(config)
        if session.get(url).status_code != 200:
            raise RuntimeError("the emulator did not answer 200")
        sessions.append(session)
    return {"mb": resident_mb() - before, "cpu": time.process_time() - cpu_before}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handles", type=int, default=200)
    parser.add_argument("--max-handles", type=int, default=1000)
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # url,env as JSON: one run, here
    args = parser.parse_args()
    if args.measure:
        url, env = json.loads(args.measure)
        print(json.dumps(measure(url, env, args.handles)))
        return 0
    if not 0 < args.handles <= args.max_handles:
        parser.error(f"--handles must be between 1 and --max-handles ({args.max_handles})")
    if not os.path.exists(OS_BUNDLE):
        parser.error(f"needs the operating system's CA bundle at {OS_BUNDLE} (ca-certificates)")

    from bench.concurrency import start_emulator
    from tests.servers import stop_process

    emulator, url, _, ca_file = start_emulator(0.25, "2026", http2=True)
    work = Path(tempfile.mkdtemp(prefix="chatgpt_web-tls-"))
    try:
        bundle = work / "public-and-emulator.pem"
        bundle.write_text(Path(OS_BUNDLE).read_text() + "\n" + Path(ca_file).read_text())
        directory = work / "certs"
        directory.mkdir()
        for pem in Path(OS_BUNDLE).parent.glob("*.pem"):
            shutil.copy(pem, directory)
        shutil.copy(ca_file, directory / "emulator-ca.pem")
        subprocess.run(["openssl", "rehash", str(directory)], check=True, capture_output=True)
        count = Path(OS_BUNDLE).read_text().count("BEGIN CERTIFICATE")
        print(f"{args.handles} handles per trust source, each one TLS connection (HTTP/2) to the "
              f"emulator; public CAs: {count} ({OS_BUNDLE})")
        print(f"{'trust source':>20}  {'RSS/handle':>10}  {'CPU/handle':>10}")
        sources = {
            "CA file, 1 CA": {"CHATGPT_CA_FILE": ca_file},
            "CA file, public CAs": {"CHATGPT_CA_FILE": str(bundle)},
            "CA dir, public CAs": {"CHATGPT_CA_DIR": str(directory)},
        }
        for name, env in sources.items():
            run = subprocess.run(
                [sys.executable, __file__, "--handles", str(args.handles),
                 "--measure", json.dumps([url + "/", {**env, "LOG_LEVEL": "WARNING"}])],
                cwd=REPO, capture_output=True, text=True, timeout=600, check=True)
            figures = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"{name:>20}  {figures['mb'] * 1024 / args.handles:>7.0f} KB"
                  f"  {figures['cpu'] * 1000 / args.handles:>7.2f} ms", flush=True)
    finally:
        stop_process(emulator, 10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
