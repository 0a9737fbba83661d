"""A real web page in headless Chromium streams a chat completion from another origin (CORS).

The page is served from one loopback port, the service from another: two origins, so Chromium
sends a preflight and enforces the service's CORS headers exactly as it would for NextChat or
LobeChat. The browser is Debian's `chromium` package (.ci/run installs it), driven by Playwright's
Python package (tests/browser_fixtures.py); Playwright downloads no browser of its own.
"""
from __future__ import annotations

import pytest
from flask import Flask

from tests.browser_fixtures import launched_chromium
from tests.service_fixtures import LiveServer

PAGE = """<!doctype html><title>chat</title><script>
async function ask(service, token) {
  const response = await fetch(service + "/v1/chat/completions", {
    method: "POST",
    headers: {"Authorization": "Bearer " + token, "Content-Type": "application/json"},
    body: JSON.stringify({model: "gpt-4o", stream: true,
                          messages: [{role: "user", content: "from the browser"}]}),
  });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let text = "", buffer = "", events = 0;
  for (;;) {
    const {value, done} = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, {stream: true});
    const lines = buffer.split("\\n");
    buffer = lines.pop();
    for (const line of lines) {
      if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
      events += 1;
      text += JSON.parse(line.slice(6)).choices[0]?.delta?.content || "";
    }
  }
  return {status: response.status, text, events,
          remaining: response.headers.get("RateLimit-Remaining"),
          requestId: response.headers.get("X-Request-ID")};
}
</script>"""


@pytest.fixture
def page_origin():
    """A second origin that serves the page."""
    site = Flask("page")
    site.add_url_rule("/", "page", lambda: PAGE)
    server = LiveServer(site)
    yield server.url
    server.stop()


def _open(browser, url):
    page = browser.new_page()
    page.goto(url)
    return page


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium of this module's own (one launch for its tests): Playwright's sync API
    keeps an event loop running while it is open, and the session's browser (web_browser) would
    then break asyncio.run() in the async SDK tests that run after this module."""
    with launched_chromium() as browser:
        yield browser


def test_a_page_from_an_allowed_origin_streams_a_completion(browser, page_origin,
                                                             live_service_factory, token):
    # A limit written out applies to every request (the default only to pooled ones), so the
    # answer carries RateLimit-* headers for the page to read.
    service = live_service_factory(CORS_ORIGINS=page_origin, RATE_LIMIT_IP="120/hour")
    page = _open(browser, page_origin + "/")
    result = page.evaluate("([service, token]) => ask(service, token)", [service.url, token])
    assert result["status"] == 200
    assert result["text"] == "Echo: from the browser"
    assert result["events"] > 2  # streamed as several chunks, not one body
    # Exposed headers are readable by the page.
    assert result["remaining"] is not None and result["requestId"]


def test_a_page_from_another_origin_is_refused_by_the_browser(browser, page_origin,
                                                              live_service_factory, token):
    service = live_service_factory(CORS_ORIGINS="https://chat.example.com")
    page = _open(browser, page_origin + "/")
    outcome = page.evaluate("""([service, token]) => ask(service, token).then(
        () => "answered", (error) => error.name)""", [service.url, token])
    assert outcome == "TypeError"  # "Failed to fetch": the preflight was refused
