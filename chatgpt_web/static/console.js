// The operator console: the admin key is kept in sessionStorage (this tab only) and sent as
// "Authorization: Bearer <ADMIN_KEY>" to /admin/*. Everything shown comes through textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const KEY = "chatgpt_web.admin_key";
let accounts = [];

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function adminHeaders() {
  return { Authorization: "Bearer " + (sessionStorage.getItem(KEY) || "") };
}

async function admin(path, method = "GET", payload = undefined) {
  const headers = adminHeaders();
  if (payload !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, body: payload === undefined ? undefined : JSON.stringify(payload),
  });
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) throw apiError(response.status, body);
  return body;
}

function apiError(status, body) {
  const error = (body && body.error) || body || {};
  return new ApiError(status, error.code || "http_" + status, error.message || "HTTP " + status);
}

function showError(error) {
  const box = $("error");
  const code = document.createElement("strong");
  code.className = "error-code";
  code.textContent = error.code || "error";
  const text = document.createElement("span");
  text.textContent = " " + error.message + (error.status ? " (HTTP " + error.status + ")" : "");
  box.replaceChildren(code, text);
  box.hidden = false;
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined || text === "" ? "—" : String(text);
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

function countdown(epochSeconds) {
  if (!epochSeconds) return "—";
  let left = Math.round(epochSeconds - Date.now() / 1000);
  if (left <= 0) return "expired";
  const days = Math.floor(left / 86400);
  left %= 86400;
  const hours = Math.floor(left / 3600);
  const minutes = Math.floor((left % 3600) / 60);
  const seconds = left % 60;
  if (days) return days + "d " + hours + "h";
  if (hours) return hours + "h " + String(minutes).padStart(2, "0") + "m";
  return minutes + "m " + String(seconds).padStart(2, "0") + "s";
}

function countdownCell(row, epochSeconds) {
  const td = cell(row, countdown(epochSeconds), "countdown");
  if (epochSeconds) td.dataset.epoch = epochSeconds;
  return td;
}

// What /admin/accounts counts in a row, and the share of answers from another model.
function troubles(account) {
  const found = [];
  if (account.refusals) found.push(account.refusals + " refused");
  if (account.refresh_failures) found.push(account.refresh_failures + " renewals failed");
  const share = account.model_share;
  if (share && share.other_model) {
    found.push(share.other_model + "/" + share.answers + " from another model");
  }
  return found;
}

function renderAccounts() {
  const body = $("accounts").querySelector("tbody");
  body.replaceChildren();
  for (const account of accounts) {
    const row = document.createElement("tr");
    row.dataset.account = account.id;
    cell(row, account.id, "id");
    cell(row, account.kind);
    cell(row, account.weight);
    const health = cell(row, account.status, "status " + account.status);
    health.dataset.testid = "status";
    countdownCell(row, account.token_expires_at).dataset.testid = "expires";
    countdownCell(row, account.rest_until);
    cell(row, account.last_error, account.last_error ? "last-error" : "");
    const downgrade = account.downgraded;
    cell(row, downgrade ? downgrade.requested + " → " + downgrade.served : "no",
         downgrade ? "flag" : "");
    cell(row, troubles(account).join("; ") || "none",
         account.degraded ? "flag" : "").dataset.testid = "troubles";
    const actions = document.createElement("td");
    actions.className = "actions";
    for (const [label, action] of [["Re-check", "check"],
                                   account.status === "disabled" ? ["Enable", "enable"]
                                                                 : ["Disable", "disable"]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "small";
      button.textContent = label;
      button.dataset.action = action;
      button.addEventListener("click", () => act(account.id, action, button));
      actions.appendChild(button);
    }
    row.appendChild(actions);
    body.appendChild(row);
  }
}

async function act(accountId, action, button) {
  button.disabled = true;
  try {
    const answer = await admin("/admin/accounts/" + encodeURIComponent(accountId) + "/" + action,
                               "POST");
    accounts = accounts.map((account) => (account.id === accountId ? answer.account : account));
    renderAccounts();
    if (answer.ok === false) showError(new ApiError(answer.error.status, answer.error.code,
                                                    accountId + ": " + answer.error.message));
    else $("error").hidden = true;
  } catch (error) {
    showError(error);
    button.disabled = false;
  }
}

async function loadAccounts() {
  const answer = await admin("/admin/accounts");
  accounts = answer.accounts;
  $("accounts").hidden = !answer.pool;
  $("accounts-note").hidden = answer.pool;
  $("accounts-note").textContent = "No pooled accounts: ACCOUNTS_FILE is not set.";
  renderAccounts();
}

function hint(id, text) {
  $(id).textContent = text;
  $(id).hidden = !text;
}

function button(label, action, onClick, disabledWhy) {
  const node = document.createElement("button");
  node.type = "button";
  node.className = "small";
  node.textContent = label;
  node.dataset.action = action;
  if (disabledWhy) {
    node.disabled = true;
    node.title = disabledWhy;
  } else {
    node.addEventListener("click", () => onClick(node));
  }
  return node;
}

function list(values) {
  return values && values.length ? values.join(", ") : "any";
}

// --- client keys (GET/POST /admin/keys, PATCH/DELETE /admin/keys/<id>) -------------------------

function keyState(key) {
  if (key.disabled) return "disabled";
  if (key.expires_at && Date.parse(key.expires_at) <= Date.now()) return "expired";
  return "active";
}

function quotaText(key) {
  const parts = [];
  for (const [kind, limits] of Object.entries(key.quota || {})) {
    for (const limit of [].concat(limits)) parts.push(limit + " " + kind);
  }
  return parts.length ? parts.join(", ") : "none";
}

// "3 req · 1,200 tok", each with its limit when the key has one ("3/100 req").
function usedText(period) {
  if (!period) return "—";
  const part = (entry, unit) => entry.used.toLocaleString("en")
    + (entry.limit === null || entry.limit === undefined ? ""
       : "/" + entry.limit.toLocaleString("en")) + " " + unit;
  return part(period.requests, "req") + " · " + part(period.tokens, "tok");
}

function renderKeys(keys) {
  const body = $("keys").querySelector("tbody");
  body.replaceChildren();
  for (const key of keys) {
    const row = body.insertRow();
    row.dataset.key = key.id;
    cell(row, key.id, "id");
    cell(row, key.label).dataset.testid = "label";
    const state = keyState(key);
    const stateCell = cell(row, state + (key.source === "file" ? " (KEYS_FILE)" : ""),
                           "status " + state);
    stateCell.dataset.testid = "state";
    cell(row, key.expires_at ? new Date(key.expires_at).toLocaleString() : "never");
    cell(row, list(key.models));
    cell(row, list(key.backends));
    cell(row, list(key.ips));
    cell(row, key.rate || "service default");
    cell(row, key.concurrency
      ? (key.in_flight || 0) + " running / " + key.concurrency : "no cap");
    cell(row, quotaText(key));
    cell(row, usedText(key.usage && key.usage.day)).dataset.testid = "used-today";
    cell(row, usedText(key.usage && key.usage.month)).dataset.testid = "used-month";
    const actions = document.createElement("td");
    actions.className = "actions";
    const readOnly = key.source === "file" ? "A KEYS_FILE key: change it in the file" : "";
    actions.append(
      button(key.disabled ? "Enable" : "Disable", key.disabled ? "enable" : "disable",
             (node) => changeKey(key.id, { disabled: !key.disabled }, node), readOnly),
      button("Edit", "edit", () => editKey(key), readOnly),
      button("Revoke", "revoke", (node) => revokeKey(key.id, node), readOnly),
      button("Usage", "usage", () => {
        $("usage-key").value = key.id;
        loadUsage();
        $("usage-panel").scrollIntoView();
      }));
    row.appendChild(actions);
  }
}

function fillKeyChoices(keys) {
  const select = $("usage-key");
  const chosen = select.value;
  const all = document.createElement("option");
  all.value = "";
  all.textContent = "all keys";
  select.replaceChildren(all, ...keys.map((key) => {
    const option = document.createElement("option");
    option.value = option.textContent = key.id;
    return option;
  }));
  if (keys.some((key) => key.id === chosen)) select.value = chosen;
}

async function loadKeys() {
  let answer;
  try {
    answer = await admin("/admin/keys");
  } catch (error) {
    $("keys").hidden = true;
    $("key-create").hidden = true;
    hint("keys-note", error.code + ": " + error.message);
    return;
  }
  renderKeys(answer.keys);
  fillKeyChoices(answer.keys);
  $("keys").hidden = !answer.keys.length;
  $("key-create").hidden = false;
  hint("keys-note", [
    answer.keys.length ? "" : "No client keys yet.",
    answer.required ? "" : "Callers are not asked for a client key (neither KEYS_FILE nor "
      + "API_KEYS is set): keys made here are kept, but nobody has to present one.",
  ].join(" ").trim());
}

function commaList(text) {
  return text.split(",").map((item) => item.trim()).filter(Boolean);
}

// The form's fields as the key record /admin/keys takes (an empty field restricts nothing).
function keyFields(form) {
  const value = (name) => form.elements[name].value.trim();
  const fields = { id: value("id") };
  if (value("label")) fields.label = value("label");
  if (value("expires_at")) {
    fields.expires_at = new Date(value("expires_at")).toISOString().replace(/\.\d+Z$/, "Z");
  }
  for (const name of ["models", "ips"]) {
    if (value(name)) fields[name] = commaList(value(name));
  }
  if (value("backends")) fields.backends = [value("backends")];
  if (value("rate")) fields.rate = value("rate");
  if (value("concurrency")) fields.concurrency = Number(value("concurrency"));
  const quota = {};
  for (const kind of ["requests", "tokens"]) {
    for (const period of ["day", "month"]) {
      const limit = value(kind + "_" + period);
      if (limit) (quota[kind] = quota[kind] || []).push(limit + "/" + period);
    }
  }
  if (Object.keys(quota).length) fields.quota = quota;
  return fields;
}

// The form makes a key, or (after Edit) changes one: then every scope is sent, an empty field as
// null, which removes that scope.
async function createKey(event) {
  event.preventDefault();
  const form = event.target;
  const submit = form.querySelector("button[type=submit]");
  const editing = form.dataset.editing;
  submit.disabled = true;
  try {
    if (editing) {
      const changes = { label: null, expires_at: null, models: null, backends: null, ips: null,
                        rate: null, concurrency: null, quota: null, ...keyFields(form) };
      delete changes.id;
      await admin("/admin/keys/" + encodeURIComponent(editing), "PATCH", changes);
      stopEditing();
    } else {
      const made = await admin("/admin/keys", "POST", keyFields(form));
      form.reset();
      $("new-key-id").textContent = made.id;
      $("new-key-value").textContent = made.key;
      $("new-key").hidden = false;
    }
    $("error").hidden = true;
    await loadKeys();
  } catch (error) {
    showError(error);
  } finally {
    submit.disabled = false;
  }
}

// "2027-01-01T00:00:00Z" as a datetime-local value in the browser's time zone.
function localTime(iso) {
  const moment = new Date(iso);
  return new Date(moment.getTime() - moment.getTimezoneOffset() * 60000).toISOString()
    .slice(0, 16);
}

function editKey(key) {
  const form = $("key-form");
  const field = (name) => form.elements[name];
  form.reset();
  form.dataset.editing = key.id;
  field("id").value = key.id;
  field("id").readOnly = true;
  field("label").value = key.label || "";
  field("expires_at").value = key.expires_at ? localTime(key.expires_at) : "";
  field("models").value = (key.models || []).join(", ");
  field("backends").value = key.backends && key.backends.length === 1 ? key.backends[0] : "";
  field("ips").value = (key.ips || []).join(", ");
  field("rate").value = key.rate || "";
  field("concurrency").value = key.concurrency || "";
  for (const [kind, limits] of Object.entries(key.quota || {})) {
    for (const limit of [].concat(limits)) {
      const [amount, period] = limit.split("/");
      if (field(kind + "_" + period)) field(kind + "_" + period).value = amount;
    }
  }
  $("key-form-title").textContent = "Change key " + key.id;
  form.querySelector("button[type=submit]").textContent = "Save changes";
  $("key-edit-cancel").hidden = false;
  $("key-create").open = true;
  $("key-create").scrollIntoView();
}

function stopEditing() {
  const form = $("key-form");
  form.reset();
  delete form.dataset.editing;
  form.elements.id.readOnly = false;
  $("key-form-title").textContent = "New client key";
  form.querySelector("button[type=submit]").textContent = "Create key";
  $("key-edit-cancel").hidden = true;
}

async function copyNewKey() {
  const key = $("new-key-value").textContent;
  try {
    await navigator.clipboard.writeText(key);
    $("new-key-copy").textContent = "Copied";
  } catch (_) {
    // No clipboard (an http:// page that is not localhost): select the key to copy by hand.
    getSelection().selectAllChildren($("new-key-value"));
    $("new-key-copy").textContent = "Press Ctrl+C";
  }
}

function hideNewKey() {
  $("new-key-value").textContent = "";
  $("new-key-id").textContent = "";
  $("new-key-copy").textContent = "Copy";
  $("new-key").hidden = true;
}

async function changeKey(id, changes, node) {
  node.disabled = true;
  try {
    await admin("/admin/keys/" + encodeURIComponent(id), "PATCH", changes);
    $("error").hidden = true;
    await loadKeys();
  } catch (error) {
    showError(error);
    node.disabled = false;
  }
}

async function revokeKey(id, node) {
  if (!confirm("Revoke the key " + id + "? Requests with it are refused at once.")) return;
  node.disabled = true;
  try {
    await admin("/admin/keys/" + encodeURIComponent(id), "DELETE");
    $("error").hidden = true;
    await loadKeys();
  } catch (error) {
    showError(error);
    node.disabled = false;
  }
}

// --- relay upstreams (GET /admin/upstreams) ----------------------------------------------------

async function loadUpstreams() {
  let answer;
  try {
    answer = await admin("/admin/upstreams");
  } catch (error) {
    $("upstreams").hidden = true;
    // "relay_disabled" is the relay saying why there is nothing; a bare 404 is a version
    // without a relay.
    hint("upstreams-note", error.code === "not_found"
      ? "Not available in this version." : error.message);
    return;
  }
  const body = $("upstreams").querySelector("tbody");
  body.replaceChildren();
  for (const key of answer.keys) {
    const row = body.insertRow();
    row.dataset.upstream = key.upstream;
    row.dataset.key = key.key;
    cell(row, key.upstream, "id");
    cell(row, key.key);
    cell(row, key.weight);
    cell(row, key.status, "status " + key.status).dataset.testid = "health";
    countdownCell(row, key.until);
    cell(row, key.reason, key.status === "healthy" ? "" : "last-error");
    cell(row, key.strikes);
    cell(row, key.denied_models && key.denied_models.length ? key.denied_models.join(", ") : "none");
    cell(row, key.models === null || key.models === undefined ? "not asked" : key.models);
  }
  $("upstreams").hidden = !answer.keys.length;
  hint("upstreams-note", answer.keys.length ? "" : "No upstream keys.");
}

// --- usage (GET /admin/usage): totals, a chart of tokens per day, the CSV ----------------------

const SVG = "http://www.w3.org/2000/svg";

function utcDay(moment) {
  return moment.toISOString().slice(0, 10);
}

function usageQuery(csv) {
  const query = new URLSearchParams();
  for (const [name, id] of [["from", "usage-from"], ["to", "usage-to"], ["key", "usage-key"]]) {
    if ($(id).value) query.set(name, $(id).value);
  }
  if (csv) query.set("format", "csv");
  return "/admin/usage?" + query;
}

function svg(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [attribute, value] of Object.entries(attributes)) {
    node.setAttribute(attribute, String(value));
  }
  if (text !== undefined) node.textContent = text;
  return node;
}

function number(value) {
  return value.toLocaleString("en");
}

function count(value, noun) {
  return number(value) + " " + noun + (value === 1 ? "" : "s");
}

// One bar per day from `first` to `last`: prompt tokens below, completion tokens on top, the day's
// token total above and its date below; a tooltip gives the requests.
function drawChart(first, last, days) {
  const dates = [];
  for (let day = new Date(first + "T00:00:00Z"); utcDay(day) <= last;
    day = new Date(day.getTime() + 86400000)) dates.push(utcDay(day));
  const width = Math.max(320, dates.length * 56 + 40);
  const height = 200;
  const top = 22;
  const bottom = 28;
  const plot = height - top - bottom;
  const most = Math.max(1, ...dates.map((day) => (days[day] ? days[day].tokens : 0)));
  const chart = svg("svg", { viewBox: "0 0 " + width + " " + height, width, height,
                             role: "img", "aria-label": "Tokens per day" });
  chart.appendChild(svg("line", { x1: 20, x2: width - 10, y1: top + plot, y2: top + plot,
                                  class: "axis" }));
  dates.forEach((day, index) => {
    const counts = days[day] || { requests: 0, prompt: 0, completion: 0, tokens: 0 };
    const x = 30 + index * 56;
    const group = svg("g", { class: "bar", "data-day": day, "data-requests": counts.requests,
                             "data-tokens": counts.tokens });
    group.appendChild(svg("title", {}, day + ": " + count(counts.requests, "request") + ", "
      + number(counts.prompt) + " prompt + " + count(counts.completion, "completion token")));
    const promptHeight = (counts.prompt / most) * plot;
    const completionHeight = (counts.completion / most) * plot;
    group.appendChild(svg("rect", { x, width: 36, y: top + plot - promptHeight,
                                    height: promptHeight, class: "prompt" }));
    group.appendChild(svg("rect", { x, width: 36, y: top + plot - promptHeight - completionHeight,
                                    height: completionHeight, class: "completion" }));
    group.appendChild(svg("text", { x: x + 18, y: top + plot - promptHeight - completionHeight - 6,
                                    "text-anchor": "middle", class: "value" },
                          number(counts.tokens)));
    group.appendChild(svg("text", { x: x + 18, y: height - 10, "text-anchor": "middle",
                                    class: "day" }, day.slice(5)));
    chart.appendChild(group);
  });
  const legend = document.createElement("p");
  legend.className = "legend";
  for (const [className, label] of [["prompt", "prompt tokens"],
                                    ["completion", "completion tokens"]]) {
    const swatch = document.createElement("span");
    swatch.className = "swatch " + className;
    const text = document.createElement("span");
    text.textContent = label;
    legend.append(swatch, text);
  }
  $("usage-chart").replaceChildren(chart, legend);
}

async function loadUsage() {
  let answer;
  try {
    answer = await admin(usageQuery(false));
  } catch (error) {
    hint("usage-note", error.code + ": " + error.message);
    $("usage-totals").hidden = true;
    $("usage-table").hidden = true;
    $("usage-chart").replaceChildren();
    return;
  }
  const days = {};
  const groups = new Map();
  const totals = { requests: 0, prompt: 0, completion: 0 };
  for (const row of answer.usage) {
    const day = (days[row.day] = days[row.day]
      || { requests: 0, prompt: 0, completion: 0, tokens: 0 });
    day.requests += row.requests;
    day.prompt += row.prompt_tokens;
    day.completion += row.completion_tokens;
    day.tokens += row.prompt_tokens + row.completion_tokens;
    totals.requests += row.requests;
    totals.prompt += row.prompt_tokens;
    totals.completion += row.completion_tokens;
    const name = JSON.stringify([row.key, row.model, row.backend]);
    const group = groups.get(name) || { ...row, requests: 0, prompt_tokens: 0,
                                        completion_tokens: 0 };
    group.requests += row.requests;
    group.prompt_tokens += row.prompt_tokens;
    group.completion_tokens += row.completion_tokens;
    groups.set(name, group);
  }
  $("usage-totals").textContent = answer.from + " to " + answer.to
    + ($("usage-key").value ? ", key " + $("usage-key").value : ", all keys") + ": "
    + count(totals.requests, "request") + ", " + count(totals.prompt, "prompt token") + ", "
    + count(totals.completion, "completion token");
  $("usage-totals").hidden = false;
  hint("usage-note", answer.usage.length ? ""
    : "Nothing used in this period (only requests made with a client key are counted).");
  drawChart(answer.from, answer.to, days);
  const body = $("usage-table").querySelector("tbody");
  body.replaceChildren();
  for (const group of groups.values()) {
    const row = body.insertRow();
    for (const value of [group.key, group.model, group.backend, number(group.requests),
                         number(group.prompt_tokens), number(group.completion_tokens)]) {
      cell(row, value);
    }
  }
  $("usage-table").hidden = !groups.size;
}

// The CSV needs the admin key in a header, so it is fetched and handed to the browser as a file.
async function downloadUsage() {
  try {
    const response = await fetch(usageQuery(true), { headers: adminHeaders() });
    if (!response.ok) throw apiError(response.status, await response.json().catch(() => null));
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = "usage-" + $("usage-from").value + "-to-" + $("usage-to").value + ".csv";
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  } catch (error) {
    showError(error);
  }
}

async function load() {
  if (!sessionStorage.getItem(KEY)) return;
  try {
    await loadAccounts();
    $("error").hidden = true;
  } catch (error) {
    showError(error);
    if (error.status === 401 || error.status === 403) return;
  }
  await Promise.all([loadKeys(), loadUpstreams()]);
  await loadUsage();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("admin-key").value.trim());
    $("admin-key").value = "";
    load();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    location.reload();
  });
  $("refresh").addEventListener("click", load);
  $("key-form").addEventListener("submit", createKey);
  $("key-edit-cancel").addEventListener("click", stopEditing);
  $("new-key-copy").addEventListener("click", copyNewKey);
  $("new-key-done").addEventListener("click", hideNewKey);
  $("usage-form").addEventListener("submit", (event) => { event.preventDefault(); loadUsage(); });
  $("usage-csv").addEventListener("click", downloadUsage);
  const today = utcDay(new Date());
  $("usage-to").value = today;
  $("usage-from").value = utcDay(new Date(Date.now() - 6 * 86400000));
  // Countdowns move every second without asking the server.
  setInterval(() => {
    document.querySelectorAll("td[data-epoch]").forEach((td) => {
      td.textContent = countdown(Number(td.dataset.epoch));
    });
  }, 1000);
  load();
});
