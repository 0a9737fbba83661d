"""What the 2026 flow costs per answer compared with the 2024 one, against the local emulator.

    python bench/turns.py [turns]

Runs the emulator and the service on 127.0.0.1 (the service reaches the emulator over real HTTP
through curl_cffi, as in the tests), then sends `turns` one-line prompts per dialect, one at a
time, alternating between the two: the 2026 site (home page once, conduit prepare, sentinel
prepare and finalize with an FNV proof and a Turnstile program, then the write) and a 2024-only
mirror (chat-requirements with a SHA3 proof, then the write). Prints per dialect the median and
p90 time of a whole answer and the upstream requests per answer, and the ratio of the medians.
The emulator's own work is included on both sides, so the ratio is an upper bound of what the
extra steps cost against a real site, where the network dominates.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from chatgpt_web import create_app  # noqa: E402
from tests.emulator import Emulator  # noqa: E402


def main() -> None:
    turns = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    with Emulator() as emulator, tempfile.TemporaryDirectory(prefix="turns-bench-") as stores:
        emulator.switches.pings = False
        token = emulator.mint_access_token()
        clients = {}
        for dialect in ("2026", "2024"):
            app = create_app({"CHATGPT_BASE_URL": emulator.url, "CHATGPT_AUTH_URL": emulator.url,
                              "CACHE_DIR": f"{stores}/{dialect}", "CHATGPT_PROTOCOL": dialect,
                              "REQUEST_TIMEOUT": "30", "LOG_LEVEL": "warning"})
            clients[dialect] = app.test_client()
        times: dict[str, list[float]] = {"2026": [], "2024": []}
        requests: dict[str, int] = {"2026": 0, "2024": 0}
        for index in range(turns + 1):
            for dialect, client in clients.items():
                emulator.switches.dialect = dialect
                before = len(emulator.requests)
                began = time.perf_counter()
                response = client.post("/send_message", data={"access_token": token,
                                                              "prompt": f"turn {index}"})
                took = time.perf_counter() - began
                assert response.status_code == 200, response.get_data(as_text=True)
                if index:  # the first turn of each warms up (home page, imports)
                    times[dialect].append(took)
                    requests[dialect] += len(emulator.requests) - before
        for dialect, values in times.items():
            ordered = sorted(values)
            print(f"{dialect}: {turns} answers, median {statistics.median(values) * 1e3:.1f} ms, "
                  f"p90 {ordered[int(0.9 * (len(ordered) - 1))] * 1e3:.1f} ms, "
                  f"{requests[dialect] / turns:.1f} upstream requests per answer")
        ratio = statistics.median(times["2026"]) / statistics.median(times["2024"])
        print(f"ratio of medians 2026/2024: {ratio:.2f}")


if __name__ == "__main__":
    main()
