"""Account health alerts reach ALERT_WEBHOOK_URL: a local test server receives them, once per
condition; the SSRF guard keeps a private webhook out unless it is allow-listed."""
import json
import time

import httpx
import openai
import pytest

from chatgpt_web.alerts import WebhookSender
from tests.service_fixtures import LiveServer

KEY = "sk-cw-alerts-key"
ADMIN = "alerts-admin"


@pytest.fixture
def watched(make_app, tmp_path, emulator, receiver):
    accounts = tmp_path / "accounts.json"
    accounts.write_text(json.dumps([
        # Expires within the day: worth a warning, still serving.
        {"name": "soon", "access_token": emulator.mint_access_token(exp_in=3 * 3600)},
        # Already expired, weighted to be tried first: the pool finds it dead. (At 1000:1 the
        # pool chose "soon" first about once in a thousand runs, "gone" was never tried, and
        # two of the three alerts never came; at 1e9:1 once in a billion.)
        {"name": "gone", "access_token": emulator.mint_access_token(exp_in=-60),
         "weight": 1e9}]))
    server = LiveServer(make_app(API_KEYS=KEY, ADMIN_KEY=ADMIN, ACCOUNTS_FILE=str(accounts),
                                 ALERT_WEBHOOK_URL=receiver.url,
                                 ALERT_WEBHOOK_ALLOW=receiver.url.rsplit("/", 1)[0] + "/",
                                 ALERT_MIN_HEALTHY="2", ALERT_INTERVAL="1"))
    yield server
    server.stop()


def ask(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)
    return client.chat.completions.create(model="gpt-4o",
                                          messages=[{"role": "user", "content": "Hi"}])


def test_alerts_reach_the_webhook_once_per_condition(watched, receiver):
    assert ask(watched).choices[0].message.content
    alerts = receiver.take(3)
    assert receiver.received(wait=1) == []  # and no fourth
    by_condition = {(a["condition"], a.get("account")) for a in alerts}
    assert by_condition == {("dead", "gone"), ("expiring", "soon"), ("few_healthy", None)}
    assert all(a["source"] == "chatgpt_web" and a["repeat"] == 0 for a in alerts)
    few = next(a for a in alerts if a["condition"] == "few_healthy")
    assert few["healthy"] == 1 and few["min_healthy"] == 2
    # /admin/accounts shows the same conditions.
    shown = httpx.get(watched.url + "/admin/accounts",
                      headers={"Authorization": f"Bearer {ADMIN}"}).json()
    assert {(a["condition"], a.get("account")) for a in shown["alerts"]} == by_condition
    # Later looks at the pool (ALERT_INTERVAL=1) send nothing new: each was sent once.
    time.sleep(1.1)
    assert ask(watched).choices[0].message.content
    assert receiver.received(wait=2) == []
    # Nothing secret in what was sent.
    assert "access_token" not in json.dumps(alerts) and "@" not in json.dumps(alerts)


def test_a_private_webhook_is_refused_unless_allow_listed(receiver):
    sent = []
    sender = WebhookSender(receiver.url, (), lambda pins: sent.append(pins))
    with pytest.raises(ValueError, match="ALERT_WEBHOOK_ALLOW"):
        sender({"condition": "dead"})
    assert sent == [] and receiver.received(wait=0.5) == []
    public = WebhookSender("https://hooks.example.com/x", (),
                           lambda pins: sent.append(pins),
                           resolver=lambda host, port: ["93.184.216.34"])
    assert public.pins() == ["hooks.example.com:443:93.184.216.34"]
    rebinding = WebhookSender("https://hooks.example.com/x", (), None,
                              resolver=lambda host, port: ["93.184.216.34", "10.0.0.1"])
    with pytest.raises(ValueError):
        rebinding.pins()
