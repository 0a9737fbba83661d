"""Metrics of workers that have ended: their counts stay in the totals, their files go.

In multiprocess mode every process writes its own files; each test's "workers" are real child
processes that import chatgpt_web.metrics with PROMETHEUS_MULTIPROC_DIR set, count, and exit."""
import os
import subprocess
import sys
import threading

from chatgpt_web import metrics

WORKER = """
import sys
from chatgpt_web import metrics
for _ in range(int(sys.argv[1])):
    metrics.observe_request("/v1/chat/completions", 200, 0.3)
metrics.STREAMS_IN_FLIGHT.inc()
print(__import__("os").getpid())
"""


def run_worker(directory, requests: int) -> int:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    done = subprocess.run([sys.executable, "-c", WORKER, str(requests)], env=env, check=True,
                          capture_output=True, text=True, timeout=60)
    return int(done.stdout)


def scrape(directory, monkeypatch) -> str:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    return metrics.render()[0].decode()


def line(text: str, prefix: str) -> str:
    [found] = [row for row in text.splitlines() if row.startswith(prefix)]
    return found


REQUESTS = 'chatgpt_web_requests_total{route="/v1/chat/completions",status="200"}'
SECONDS = 'chatgpt_web_request_seconds_count{route="/v1/chat/completions"}'
IN_FLIGHT = "chatgpt_web_streams_in_flight "


def test_a_dead_workers_counts_stay_in_the_totals_and_its_files_go(tmp_path, monkeypatch):
    first, second = run_worker(tmp_path, 3), run_worker(tmp_path, 4)
    before = scrape(tmp_path, monkeypatch)
    assert line(before, REQUESTS).endswith(" 7.0")
    assert line(before, IN_FLIGHT).endswith(" 2.0")  # each left one stream open

    metrics.fold_dead_process(first, str(tmp_path))
    metrics.fold_dead_process(second, str(tmp_path))

    after = scrape(tmp_path, monkeypatch)
    assert line(after, REQUESTS) == line(before, REQUESTS)
    assert line(after, SECONDS).endswith(" 7.0")
    assert line(after, 'chatgpt_web_request_seconds_bucket{le="0.5"') == \
        line(before, 'chatgpt_web_request_seconds_bucket{le="0.5"')
    assert IN_FLIGHT not in after  # a dead worker streams nothing
    left = sorted(name for name in os.listdir(tmp_path) if name.endswith(".db"))
    assert left == ["counter_archive.db", "histogram_archive.db"]

    third = run_worker(tmp_path, 1)  # the archive keeps adding up
    metrics.fold_dead_process(third, str(tmp_path))
    assert line(scrape(tmp_path, monkeypatch), REQUESTS).endswith(" 8.0")


def test_a_process_without_files_is_folded_as_nothing(tmp_path, monkeypatch):
    run_worker(tmp_path, 2)
    metrics.fold_dead_process(999_999_999, str(tmp_path))
    assert line(scrape(tmp_path, monkeypatch), REQUESTS).endswith(" 2.0")


def test_a_fold_waits_for_a_scrape_reading_the_files(tmp_path, monkeypatch):
    dead = run_worker(tmp_path, 5)
    folded = threading.Event()
    with metrics._files_lock(str(tmp_path), metrics.fcntl.LOCK_SH):  # a scrape in progress
        folder = threading.Thread(
            target=lambda: (metrics.fold_dead_process(dead, str(tmp_path)), folded.set()))
        folder.start()
        assert not folded.wait(0.3)
        assert os.path.exists(tmp_path / f"counter_{dead}.db")
    assert folded.wait(30)
    folder.join()
    assert not os.path.exists(tmp_path / f"counter_{dead}.db")
    assert line(scrape(tmp_path, monkeypatch), REQUESTS).endswith(" 5.0")


def test_a_scrape_waits_for_a_fold_in_progress(tmp_path, monkeypatch):
    run_worker(tmp_path, 2)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    scraped = []
    with metrics._files_lock(str(tmp_path), metrics.fcntl.LOCK_EX):  # a fold in progress
        scraper = threading.Thread(target=lambda: scraped.append(metrics.render()[0]))
        scraper.start()
        scraper.join(0.3)
        assert not scraped
    scraper.join(30)
    assert line(scraped[0].decode(), REQUESTS).endswith(" 2.0")
