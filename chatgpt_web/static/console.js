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

async function admin(path, method = "GET") {
  const response = await fetch(path, {
    method,
    headers: { Authorization: "Bearer " + (sessionStorage.getItem(KEY) || "") },
  });
  let body = null;
  try { body = await response.json(); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    const error = (body && body.error) || body || {};
    throw new ApiError(response.status, error.code || "http_" + response.status,
                       error.message || "HTTP " + response.status);
  }
  return body;
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

// The sections other parts of the service fill: a table of whatever list the endpoint returns.
async function loadSection(name, path, missing) {
  const target = document.querySelector('[data-testid="' + name + '"]');
  try {
    const answer = await admin(path);
    const rows = Array.isArray(answer) ? answer
      : Object.values(answer).find((value) => Array.isArray(value)) || [];
    if (!rows.length) {
      const empty = document.createElement("p");
      empty.className = "hint";
      empty.textContent = "None configured.";
      target.replaceChildren(empty);
      return;
    }
    const columns = [...new Set(rows.flatMap((row) => Object.keys(row)))];
    const table = document.createElement("table");
    const head = table.createTHead().insertRow();
    columns.forEach((column) => {
      const th = document.createElement("th");
      th.textContent = column;
      head.appendChild(th);
    });
    const body = table.createTBody();
    for (const item of rows) {
      const row = body.insertRow();
      columns.forEach((column) => {
        const value = item[column];
        cell(row, value !== null && typeof value === "object" ? JSON.stringify(value) : value);
      });
    }
    target.replaceChildren(table);
  } catch (error) {
    const note = document.createElement("p");
    note.className = "hint";
    // A 404 for the route itself means this version has no such part; any other answer (such as
    // "relay_disabled") is the part speaking, and its own message says why it is empty.
    note.textContent = error.status === 404 && error.code === "not_found" ? missing
      : error.code + ": " + error.message;
    target.replaceChildren(note);
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
  await Promise.all([
    loadSection("keys", "/admin/keys",
                "Not available in this version: managing client keys here arrives with scoped keys."),
    loadSection("upstreams", "/admin/upstreams",
                "Not available: no relay upstreams (UPSTREAMS_FILE is not set; docs/relay.md)."),
  ]);
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
  // Countdowns move every second without asking the server.
  setInterval(() => {
    document.querySelectorAll("td[data-epoch]").forEach((td) => {
      td.textContent = countdown(Number(td.dataset.epoch));
    });
  }, 1000);
  load();
});
