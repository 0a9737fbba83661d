"""Shared services are built once, lazily, even when requests race to use them first."""
import threading
import time

from chatgpt_web import services as services_module
from chatgpt_web.config import Config
from chatgpt_web.services import Services


def test_concurrent_first_use_builds_one_store(monkeypatch, tmp_path):
    real_open_store = services_module.open_store
    calls = []

    def slow_open_store(config):
        calls.append(1)
        time.sleep(0.05)  # widen the race window
        return real_open_store(config)

    monkeypatch.setattr(services_module, "open_store", slow_open_store)
    shared = Services(Config.from_env({"CACHE_DIR": str(tmp_path)}))
    seen = []
    threads = [threading.Thread(target=lambda: seen.append(shared.tokens)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert len({id(tokens) for tokens in seen}) == 1


def test_creating_services_touches_no_disk(tmp_path):
    Services(Config.from_env({"CACHE_DIR": str(tmp_path / "cache")}))
    assert not (tmp_path / "cache").exists()
