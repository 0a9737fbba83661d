"""A real browser for the page tests: Debian's `chromium` driven by Playwright's Python package.

Playwright downloads no browser here: `.ci/run` installs Debian's chromium and the tests launch
it by path (CHROMIUM overrides the path). One browser serves the whole session; each test gets a
fresh context (its own storage), so tests stay independent and fast. Screenshots go to
tmp/artifacts/ in the repository (ignored by git).
"""
from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "tmp" / "artifacts"


def chromium_path() -> str:
    """The chromium executable, or skip (fail when REQUIRE_CHROMIUM=1, as in CI)."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if path:
        return path
    if os.environ.get("REQUIRE_CHROMIUM", "").lower() in ("1", "true", "yes"):
        pytest.fail("chromium is not installed (.ci/run installs Debian's chromium package)")
    pytest.skip("chromium is not installed")


@contextmanager
def launched_chromium():
    """A headless chromium through Playwright, closed on leaving."""
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable,
                                             args=["--no-sandbox", "--disable-gpu"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def web_browser():
    """One headless chromium for the session."""
    with launched_chromium() as browser:
        yield browser


@pytest.fixture
def web_page(web_browser):
    """A page in a fresh browser context; uncaught script errors are collected in
    `page.script_errors` (failed HTTP requests are not: pages show those themselves)."""
    # bypass_csp: the pages' Content-Security-Policy forbids eval, which Playwright's
    # wait_for_function needs; it also means the XSS tests prove the renderer safe on its own.
    context = web_browser.new_context(viewport={"width": 1100, "height": 760}, bypass_csp=True)
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.script_errors = []
    page.on("pageerror", lambda error: page.script_errors.append(str(error)))
    yield page
    context.close()


@pytest.fixture
def artifacts() -> Path:
    """Where a test writes screenshots (tmp/artifacts/, not committed)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
