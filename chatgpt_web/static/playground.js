// The chat playground: a credential kept in this browser, the model list, and answers streamed
// from /v1/chat/completions, continued turn after turn. Answer text only ever reaches the page
// through Markdown.render (DOM nodes and text nodes) or textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const STORAGE_KEY = "chatgpt_web.credential";

const chat = {
  messages: [],          // the whole conversation, as the OpenAI API takes it
  conversationId: null,  // the web conversation, to continue it
  messageId: null,       // its last assistant message
  controller: null,      // aborts the answer in flight
  accessToken: null,     // exchanged from a session token, kept in memory only
  attachments: [],       // images for the next message: {name, size, url (a data: URL)}
  opening: null,         // the conversation asked for, until its messages are shown
};

// --- the credential ----------------------------------------------------------------------------

function savedCredential() {
  for (const storage of [sessionStorage, localStorage]) {
    try {
      const saved = JSON.parse(storage.getItem(STORAGE_KEY) || "null");
      if (saved && saved.kind) return { ...saved, remembered: storage === localStorage };
    } catch (_) { /* a broken entry is ignored */ }
  }
  return null;
}

function storeCredential() {
  const entry = JSON.stringify({ kind: $("credential-kind").value, value: $("credential").value });
  localStorage.removeItem(STORAGE_KEY);
  sessionStorage.removeItem(STORAGE_KEY);
  ($("remember").checked ? localStorage : sessionStorage).setItem(STORAGE_KEY, entry);
  chat.accessToken = null;
}

async function authorization() {
  const kind = $("credential-kind").value;
  const value = $("credential").value.trim();
  if (kind === "none" || !value) return {};
  if (kind !== "session") return { Authorization: "Bearer " + value };
  if (!chat.accessToken) {
    const response = await fetch("/get_access_token", {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ session_token: value }),
    });
    const body = await readJson(response);
    if (!response.ok) throw apiError(response.status, body);
    chat.accessToken = body.access_token;
  }
  return { Authorization: "Bearer " + chat.accessToken };
}

// --- errors ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function readJson(response) {
  try { return await response.json(); } catch (_) { return null; }
}

// Both envelopes: the OpenAI face's {"error": {...}} and the form face's {"message", "code"}.
function apiError(status, body) {
  const error = (body && body.error) || body || {};
  return new ApiError(status, error.code || "http_" + status,
                      error.message || "the service answered HTTP " + status);
}

function showError(error) {
  const box = $("error");
  box.replaceChildren();
  const code = document.createElement("strong");
  code.className = "error-code";
  code.textContent = error.code || "error";
  const text = document.createElement("span");
  text.textContent = " " + (error.message || String(error))
    + (error.status ? " (HTTP " + error.status + ")" : "");
  box.append(code, text);
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").replaceChildren();
}

// --- models ------------------------------------------------------------------------------------

async function loadModels() {
  const select = $("model");
  const chosen = select.value;
  try {
    const response = await fetch("/v1/models", { headers: await authorization() });
    const body = await readJson(response);
    if (!response.ok) throw apiError(response.status, body);
    select.replaceChildren();
    for (const model of body.data || []) {
      const option = document.createElement("option");
      option.value = option.textContent = model.id;
      select.appendChild(option);
    }
    if ([...select.options].some((option) => option.value === chosen)) select.value = chosen;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return; // no credential yet
    showError(error);
  }
}

// --- image attachments (sent as `image_url` parts holding data: URLs) --------------------------

// The service's default MAX_UPLOAD_BYTES: a larger image is refused here, before it is read and
// sent (a deployment with a lower limit answers 413, shown like any error).
const MAX_IMAGE_BYTES = 20 * 1024 * 1024;
const MAX_IMAGES = 4;
const IMAGE_TYPES = ["image/png", "image/jpeg", "image/gif", "image/webp"];

function sizeText(bytes) {
  if (bytes < 1024) return bytes + " B";
  if (bytes < 1024 * 1024) return Math.round(bytes / 1024) + " KB";
  return (bytes / 1024 / 1024).toFixed(1) + " MB";
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function attach(files) {
  clearError();
  for (const file of files) {
    const name = file.name || "pasted image";
    let refusal = null;
    if (!IMAGE_TYPES.includes(file.type)) {
      refusal = new ApiError(0, "unsupported_file",
                             name + " is not a PNG, JPEG, GIF or WebP image");
    } else if (file.size > MAX_IMAGE_BYTES) {
      refusal = new ApiError(0, "image_too_large", name + " is " + sizeText(file.size)
                             + ": images of up to " + sizeText(MAX_IMAGE_BYTES) + " can be sent");
    } else if (chat.attachments.length >= MAX_IMAGES) {
      refusal = new ApiError(0, "too_many_images",
                             "at most " + MAX_IMAGES + " images can go with one message");
    }
    if (refusal) {
      showError(refusal);
      continue;
    }
    chat.attachments.push({ name, size: file.size, url: await readAsDataUrl(file) });
  }
  renderAttachments();
}

function thumbnail(image) {
  const picture = document.createElement("img");
  picture.src = image.url; // a data: URL the page made from the chosen file
  picture.alt = image.name;
  picture.title = image.name + " (" + sizeText(image.size) + ")";
  return picture;
}

function renderAttachments() {
  const strip = $("attachments");
  strip.replaceChildren(...chat.attachments.map((image, index) => {
    const item = document.createElement("figure");
    item.className = "attachment";
    const caption = document.createElement("figcaption");
    caption.textContent = image.name + " · " + sizeText(image.size);
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "small remove";
    remove.textContent = "×";
    remove.title = "Remove " + image.name;
    remove.addEventListener("click", () => {
      chat.attachments.splice(index, 1);
      renderAttachments();
    });
    item.append(thumbnail(image), caption, remove);
    return item;
  }));
  strip.hidden = !chat.attachments.length;
  // A message may be an image alone.
  $("prompt").required = !chat.attachments.length;
}

// The content of a user message: its text, then one `image_url` part per image.
function userContent(prompt, images) {
  if (!images.length) return prompt;
  const parts = prompt ? [{ type: "text", text: prompt }] : [];
  return parts.concat(images.map((image) => ({ type: "image_url", image_url: { url: image.url } })));
}

// --- the conversation --------------------------------------------------------------------------

function bubble(role) {
  const item = document.createElement("article");
  item.className = "message " + role;
  item.dataset.role = role;
  const head = document.createElement("div");
  head.className = "message-head";
  head.textContent = role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = "message-body";
  const foot = document.createElement("div");
  foot.className = "message-foot";
  item.append(head, body, foot);
  $("hint").hidden = true;
  $("log").appendChild(item);
  return { item, head, body, foot };
}

function render(view, text) {
  view.body.replaceChildren(Markdown.render(text));
  $("log").scrollTop = $("log").scrollHeight;
}

function describeUsage(usage) {
  return "tokens: " + usage.prompt_tokens + " in, " + usage.completion_tokens + " out, "
    + usage.total_tokens + " total";
}

function setTitle(title) {
  if (title) $("title").textContent = title;
}

// Server-sent events from a fetch body: yields the JSON of each `data:` line until [DONE].
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    const lines = buffer.split(/\r?\n/);
    buffer = done ? "" : lines.pop();
    for (const line of lines) {
      if (!line.startsWith("data:")) continue;
      const data = line.slice(5).trim();
      if (data === "[DONE]") return;
      yield JSON.parse(data);
    }
    if (done) return;
  }
}

async function send(prompt) {
  clearError();
  const images = chat.attachments;
  chat.attachments = [];
  renderAttachments();
  const user = bubble("user");
  user.body.textContent = prompt;
  if (images.length) {
    const pictures = document.createElement("div");
    pictures.className = "message-images";
    pictures.append(...images.map(thumbnail));
    user.body.appendChild(pictures);
  }
  chat.messages.push({ role: "user", content: userContent(prompt, images) });
  const answer = bubble("assistant");
  answer.item.classList.add("streaming");
  let text = "";
  let scheduled = false;
  const body = {
    model: $("model").value || "auto",
    messages: chat.messages,
    stream: true,
    stream_options: { include_usage: true },
  };
  if (chat.conversationId) {
    body.conversation_id = chat.conversationId;
    body.parent_message_id = chat.messageId;
  }
  chat.controller = new AbortController();
  busy(true);
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...(await authorization()) },
      body: JSON.stringify(body),
      signal: chat.controller.signal,
    });
    if (!response.ok) throw apiError(response.status, await readJson(response));
    for await (const chunk of events(response)) {
      if (chunk.error) throw apiError(0, chunk); // failed after it began: no HTTP status to show
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) {
        text += delta.content;
        if (!scheduled) {
          scheduled = true;
          requestAnimationFrame(() => { scheduled = false; render(answer, text); });
        }
      }
      if (chunk.conversation_id) chat.conversationId = chunk.conversation_id;
      if (chunk.message_id) chat.messageId = chunk.message_id;
      if (chunk.model_slug) answer.head.textContent = "Assistant · " + chunk.model_slug;
      if (chunk.title) setTitle(chunk.title);
      if (chunk.usage) answer.foot.textContent = describeUsage(chunk.usage);
    }
    render(answer, text);
    chat.messages.push({ role: "assistant", content: text });
    $("export").hidden = !chat.conversationId;
    if ($("title").textContent === "New chat" && chat.conversationId) fetchTitle();
    loadHistory();
  } catch (error) {
    render(answer, text);
    chat.messages.pop(); // the turn failed: it is not part of the conversation
    if (!text) answer.item.remove();
    if (!text) user.item.classList.add("failed");
    if (!text && images.length) { // offered again for the next try
      chat.attachments = images.concat(chat.attachments).slice(0, MAX_IMAGES);
      renderAttachments();
    }
    if (error.name !== "AbortError") showError(error);
  } finally {
    answer.item.classList.remove("streaming");
    busy(false);
  }
}

// The title the upstream gave the conversation, when the answer did not carry it (reading a
// conversation costs no message quota). Without a way to read conversations it simply stays.
// It may come back after the page has moved to another conversation: then it is not shown.
async function fetchTitle() {
  const id = chat.conversationId;
  try {
    const response = await fetch("/v1/conversations/" + encodeURIComponent(id),
                                 { headers: await authorization() });
    if (!response.ok) return;
    const title = (await response.json()).title;
    if (chat.conversationId === id) setTitle(title);
  } catch (_) { /* the title is a nicety */ }
}

// Download the conversation as markdown (GET /v1/conversations/<id>/export).
async function exportMarkdown() {
  clearError();
  try {
    const response = await fetch("/v1/conversations/" + encodeURIComponent(chat.conversationId)
                                 + "/export?format=markdown", { headers: await authorization() });
    if (!response.ok) throw apiError(response.status, await readJson(response));
    const link = document.createElement("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = "conversation-" + chat.conversationId + ".md";
    link.click();
    setTimeout(() => URL.revokeObjectURL(link.href), 1000);
  } catch (error) {
    showError(error);
  }
}

// --- the caller's conversations (GET/PATCH/DELETE /v1/conversations) ---------------------------

async function conversationsCall(path, method = "GET", body = undefined) {
  const headers = await authorization();
  if (body) headers["Content-Type"] = "application/json";
  const response = await fetch("/v1/conversations" + path,
                               { method, headers, body: body && JSON.stringify(body) });
  const answer = await readJson(response);
  if (!response.ok) throw apiError(response.status, answer);
  return answer;
}

function historyButton(label, title, className, onClick) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = className;
  button.textContent = label;
  button.title = title;
  button.addEventListener("click", onClick);
  return button;
}

let historyAsked = 0; // a list that comes back after a later one was asked for is not shown

async function loadHistory() {
  const asked = ++historyAsked;
  let listed;
  try {
    listed = await conversationsCall("?limit=50");
  } catch (_) {
    if (asked === historyAsked) $("history").hidden = true; // no listing: no sidebar
    return;
  }
  if (asked !== historyAsked) return;
  const list = $("history-list");
  list.replaceChildren();
  for (const item of listed.data) {
    const row = document.createElement("li");
    row.dataset.conversation = item.id;
    row.classList.toggle("current", item.id === chat.conversationId);
    const open = historyButton(item.title || "Untitled", item.title || item.id, "open",
                               () => openConversation(item.id));
    const rename = historyButton("✎", "Rename", "small rename", async () => {
      const title = prompt("New title", item.title || "");
      if (!title || !title.trim()) return;
      try {
        await conversationsCall("/" + encodeURIComponent(item.id), "PATCH", { title: title.trim() });
        if (item.id === chat.conversationId) setTitle(title.trim());
        loadHistory();
      } catch (error) { showError(error); }
    });
    const remove = historyButton("×", "Delete", "small delete", async () => {
      if (!confirm("Delete this conversation?")) return;
      try {
        await conversationsCall("/" + encodeURIComponent(item.id), "DELETE");
        if (item.id === chat.conversationId) newChat();
        loadHistory();
      } catch (error) { showError(error); }
    });
    row.append(open, rename, remove);
    list.appendChild(row);
  }
  $("history").hidden = false;
}

// Show a stored conversation and continue it from its last message.
async function openConversation(id) {
  if (chat.controller) chat.controller.abort();
  clearError();
  chat.opening = id;
  let conversation;
  try {
    conversation = await conversationsCall("/" + encodeURIComponent(id));
  } catch (error) {
    if (chat.opening === id) showError(error);
    return;
  }
  if (chat.opening !== id) return; // another conversation or a new chat was asked for meanwhile
  newChat();
  Object.assign(chat, { conversationId: id, messageId: conversation.current_message_id,
                        messages: [] });
  for (const message of conversation.messages) {
    if (message.role !== "user" && message.role !== "assistant") continue;
    const view = bubble(message.role);
    if (message.role === "user") view.body.textContent = message.content;
    else {
      render(view, message.content);
      if (message.model) view.head.textContent = "Assistant · " + message.model;
    }
    chat.messages.push({ role: message.role, content: message.content });
  }
  setTitle(conversation.title || "Untitled");
  $("export").hidden = false;
  document.querySelectorAll("#history-list li").forEach((row) => {
    row.classList.toggle("current", row.dataset.conversation === id);
  });
}

function busy(on) {
  $("send").disabled = on;
  $("stop").hidden = !on;
  document.body.classList.toggle("busy", on);
}

function newChat() {
  if (chat.controller) chat.controller.abort();
  Object.assign(chat, { messages: [], conversationId: null, messageId: null, opening: null });
  $("log").querySelectorAll(".message").forEach((node) => node.remove());
  $("hint").hidden = false;
  $("title").textContent = "New chat";
  $("export").hidden = true;
  clearError();
}

// --- wiring ------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  const saved = savedCredential();
  if (saved) {
    $("credential-kind").value = saved.kind;
    $("credential").value = saved.value || "";
    $("remember").checked = saved.remembered;
  }
  const changed = () => { storeCredential(); clearError(); loadModels(); loadHistory(); };
  $("credential-kind").addEventListener("change", changed);
  $("credential").addEventListener("change", changed);
  $("remember").addEventListener("change", storeCredential);
  $("new-chat").addEventListener("click", newChat);
  $("export").addEventListener("click", exportMarkdown);
  $("history-refresh").addEventListener("click", loadHistory);
  $("stop").addEventListener("click", () => chat.controller && chat.controller.abort());
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const prompt = $("prompt").value.trim();
    if ((!prompt && !chat.attachments.length) || $("send").disabled) return;
    $("prompt").value = "";
    send(prompt);
  });
  $("attach").addEventListener("click", () => $("attach-input").click());
  $("attach-input").addEventListener("change", () => {
    attach([...$("attach-input").files]);
    $("attach-input").value = ""; // choosing the same file again is a change too
  });
  $("prompt").addEventListener("paste", (event) => {
    const files = [...(event.clipboardData ? event.clipboardData.files : [])];
    if (!files.length) return; // pasted text goes in as usual
    event.preventDefault();
    attach(files);
  });
  $("composer").addEventListener("dragover", (event) => event.preventDefault());
  $("composer").addEventListener("drop", (event) => {
    event.preventDefault();
    attach([...event.dataTransfer.files]);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  loadModels();
  loadHistory();
});
