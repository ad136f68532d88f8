// mu's web app: one page per nav entry, all data from this node's control API (specs/network.md §Web app).
// No framework and no third-party code: the Content-Security-Policy allows only this node's own files.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const POLL_MS = 300;

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)mu_csrf=([^;]*)/);
  return match ? decodeURIComponent(match[1]) : "";
}

class ApiError extends Error {}

async function api(method, name, body) {
  const init = { method, headers: { "X-CSRF-Token": csrfToken() }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const reply = await fetch("/v1/" + name, init);
  const data = await reply.json();
  if (!reply.ok) throw new ApiError(data.error ? data.error.message : "HTTP " + reply.status);
  return data;
}

// A streamed route (NDJSON: events, then one done or error line): onEvent sees each event; returns the result.
async function apiStream(name, body, onEvent) {
  const reply = await fetch("/v1/" + name, {
    method: "POST", credentials: "same-origin", body: JSON.stringify(body),
    headers: { "X-CSRF-Token": csrfToken(), "Content-Type": "application/json" },
  });
  if (!reply.ok) {
    const data = await reply.json();
    throw new ApiError(data.error ? data.error.message : "HTTP " + reply.status);
  }
  const reader = reply.body.getReader();
  const decoder = new TextDecoder();
  let pending = "";
  for (;;) {
    const { value, done } = await reader.read();
    pending += decoder.decode(value || new Uint8Array(), { stream: !done });
    const lines = pending.split("\n");
    pending = lines.pop();
    for (const line of lines.filter((l) => l.trim())) {
      const event = JSON.parse(line);
      if (event.event === "done") return event.result;
      if (event.event === "error") throw new ApiError(event.error.message);
      if (onEvent) onEvent(event);
    }
    if (done) throw new ApiError("the node's reply broke off");
  }
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "?";
}

function shortId(hex) { return hex ? hex.slice(0, 12) + "…" : ""; }

function showError(message) { document.getElementById("error").textContent = message || ""; }

async function copyText(text, button) {
  try {
    await navigator.clipboard.writeText(text);
  } catch (err) {  // no clipboard permission: select the field so Ctrl+C works
    button.previousSibling.select();
  }
  button.textContent = "Copied";
  document.body.dataset.copied = text;
}

// -- Files ------------------------------------------------------------------

async function loadFiles() {
  const { files } = await api("GET", "web/files");
  const rows = files.slice().reverse().map((f) => {
    const link = el("input", { class: "link", type: "text", readonly: "", value: f.link });
    const copy = el("button", { type: "button", class: "copy" }, "Copy");
    copy.addEventListener("click", () => copyText(f.link, copy));
    const unpin = el("button", { type: "button", class: "unpin" }, "Unpin");
    unpin.addEventListener("click", async () => {
      await api("POST", "web/unpin", { root: f.root });
      await loadFiles();
    });
    return el("tr", { "data-root": f.root }, el("td", {}, f.name || shortId(f.root)), el("td", { class: "num" }, bytes(f.size)),
      el("td", {}, when(f.added_at)), el("td", {}, link, copy), el("td", {}, unpin));
  });
  document.getElementById("files").replaceChildren(...rows);
}

function upload(file) {
  const bar = document.getElementById("upload-progress");
  const status = document.getElementById("upload-status");
  bar.hidden = false;
  bar.value = 0;
  status.textContent = "Uploading " + file.name + "…";
  // The reply streams the node's add (NDJSON): `added` (chunks), one `replicated` per chunk placed, then done or error.
  let chunks = 0, placed = 0, replicas = 0, seen = 0, final = null;
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/web/upload?name=" + encodeURIComponent(file.name));
  xhr.setRequestHeader("X-CSRF-Token", csrfToken());
  xhr.upload.addEventListener("progress", (e) => {
    if (e.lengthComputable) bar.value = e.loaded / e.total;
    if (e.loaded === e.total) status.textContent = "Encrypting " + file.name + "…";
  });
  const readEvents = () => {
    if (xhr.status !== 200) return;
    const lines = xhr.responseText.split("\n");
    for (; seen < lines.length - 1; seen++) {
      const event = JSON.parse(lines[seen]);
      if (event.event === "added") chunks = event.chunks;
      else if (event.event === "replicated") { placed += 1; replicas += event.replicas; }
      else final = event;
    }
    if (chunks && !final) {
      bar.value = placed / chunks;
      status.textContent = `Sending ${file.name} to its hosts: ${placed} of ${chunks} chunks placed, ${replicas} replicas confirmed…`;
    }
    document.body.dataset.placed = `${placed}/${chunks}/${replicas}`;
  };
  xhr.addEventListener("progress", readEvents);
  xhr.addEventListener("load", async () => {
    if (xhr.status !== 200) {
      const data = JSON.parse(xhr.responseText || "{}");
      status.textContent = "";
      showError(data.error ? data.error.message : "upload failed: HTTP " + xhr.status);
      return;
    }
    readEvents();
    if (!final || final.event !== "done") {
      status.textContent = "";
      showError(final ? final.error.message : "the upload's reply broke off");
      return;
    }
    const data = final.result;
    bar.value = 1;
    status.textContent = `Added ${file.name}: ${data.chunks} chunks, ${data.replicas_confirmed} replicas confirmed.`;
    document.body.dataset.uploaded = data.link;
    await loadFiles();
  });
  xhr.addEventListener("error", () => showError("the upload broke off"));
  xhr.send(file);
}

function setUpFiles() {
  const drop = document.getElementById("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    for (const file of e.dataTransfer.files) upload(file);
  });
  document.getElementById("picker").addEventListener("change", (e) => {
    for (const file of e.target.files) upload(file);
  });
}

// -- Open a link ---------------------------------------------------------------

async function openLink(link) {
  const bar = document.getElementById("open-progress");
  const status = document.getElementById("open-status");
  const preview = document.getElementById("preview");
  preview.replaceChildren();
  document.getElementById("open-save").replaceChildren();
  delete document.body.dataset.opened;
  let state = await api("POST", "web/open", { link: link.trim() });
  bar.hidden = false;
  let previewed = false;
  for (;;) {
    if (state.size !== null) bar.value = state.size ? state.bytes / state.size : 1;
    status.textContent = state.error ? "" : `${state.name || "…"}: ${bytes(state.bytes)} of ${bytes(state.size)}` +
      (state.sats_spent ? `, ${state.sats_spent} sats paid` : "");
    if (state.error) throw new ApiError(state.error);
    if (state.size !== null && !previewed) { showPreview(state, false); previewed = true; }
    if (state.done) break;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    state = await api("POST", "web/download", { id: state.id });
  }
  if (state.media_type.startsWith("text/")) showPreview(state, true);
  const save = el("a", { class: "button", id: "save", href: "/web/downloads/" + state.id, download: state.name }, "Save " + state.name);
  document.getElementById("open-save").replaceChildren(save);
  document.body.dataset.opened = state.id;
}

function showPreview(state, done) {
  const url = "/web/downloads/" + state.id;
  const preview = document.getElementById("preview");
  const type = state.media_type || "";
  if (type.startsWith("image/")) preview.replaceChildren(el("img", { src: url, alt: state.name }));
  else if (type.startsWith("video/")) preview.replaceChildren(el("video", { src: url, controls: "", preload: "metadata" }));
  else if (type.startsWith("audio/")) preview.replaceChildren(el("audio", { src: url, controls: "" }));
  else if (type.startsWith("text/") && done) {
    fetch(url).then((r) => r.text()).then((text) => preview.replaceChildren(el("pre", {}, text.slice(0, 200000))));
  }
}

function setUpOpen() {
  document.getElementById("open-form").addEventListener("submit", (e) => {
    e.preventDefault();
    showError("");
    openLink(document.getElementById("open-link").value).catch((err) => showError(err.message));
  });
}

// -- Sync ------------------------------------------------------------------------

const SYNC_REFRESH_MS = 2000;
let syncTimer = null;

function roundText(last) {
  if (!last) return "not yet";
  if (last.error) return "error: " + last.error;
  const time = new Date(last.time_ns / 1e6).toLocaleTimeString();
  return `${time}: ${last.local_changes} local, ${last.applied} applied, ${last.devices.length} devices`;
}

async function loadSync() {
  const { folders } = await api("GET", "sync-ls");
  const rows = folders.map((f) => {
    const toggle = el("button", { type: "button", class: f.paused ? "resume" : "pause" }, f.paused ? "Resume" : "Pause");
    toggle.addEventListener("click", async () => {
      try {
        await api("POST", f.paused ? "sync-resume" : "sync-pause", { path: f.path });
        await loadSync();
      } catch (err) { showError(err.message); }
    });
    return el("tr", { "data-path": f.path, "data-state": folderState(f) }, el("td", {}, f.path, f.read_only ? " (read-only)" : ""),
      el("td", { class: "num" }, f.files), el("td", { class: "num" }, bytes(f.bytes)), el("td", { class: "state" }, stateText(f)),
      el("td", { class: f.last_round && f.last_round.error ? "error" : "" }, roundText(f.last_round)),
      el("td", { class: "num" }, f.conflict_count), el("td", {}, toggle));
  });
  document.getElementById("sync-folders").replaceChildren(...rows);
  const copies = folders.flatMap((f) => f.conflicts.map((c) => el("li", {}, `${f.path}/${c}`)));
  document.getElementById("sync-conflicts").replaceChildren(...(copies.length ? copies : [el("li", { class: "muted" }, "none")]));
  const unreadable = folders.flatMap((f) => [
    ...f.unreadable.map((u) => el("li", {}, `${f.path}/${u.path}: ${u.reason} (cannot be read)`)),
    ...f.unwritable.map((u) => el("li", {}, `${f.path}/${u.path}: ${u.reason} (cannot be written here)`))]);
  document.getElementById("sync-unreadable").replaceChildren(
    ...(unreadable.length ? unreadable : [el("li", { class: "muted" }, "none")]));
}

// paused, failing (the last round failed), syncing (changes on their way up or down) or up-to-date.
// A read-only device's own edits are never sent (its pending_up counts them): they do not keep it syncing.
function folderState(f) {
  if (f.paused) return "paused";
  if (f.last_round && f.last_round.error) return "failing";
  return (f.pending_up && !f.read_only) || f.pending_down ? "syncing" : "up-to-date";
}

function stateText(f) {
  const state = folderState(f);
  let text = state === "syncing" ? (f.read_only ? `syncing: ${f.pending_down} down` : `syncing: ${f.pending_up} up, ${f.pending_down} down`)
    : state === "up-to-date" ? "up to date" : state;
  if (f.read_only && f.pending_up) text += `, ${f.pending_up} local edits kept here`;
  if (f.unreadable_count) text += `, ${f.unreadable_count} unreadable`;
  if (f.unwritable_count) text += `, ${f.unwritable_count} not written`;
  return text;
}

async function loadHistory(link) {
  const { snapshots } = await apiStream("folder-log", { link });
  const form = document.getElementById("restore-form");
  document.getElementById("history").replaceChildren(...snapshots.map((s) => {
    const pick = el("button", { type: "button" }, "Restore…");
    pick.addEventListener("click", () => {
      document.getElementById("restore-number").value = s.number;
      form.hidden = false;
      document.getElementById("restore-output").focus();
    });
    return el("tr", { "data-number": s.number }, el("td", { class: "num" }, s.number), el("td", {}, new Date(s.time_ns / 1e6).toLocaleString()),
      el("td", { class: "num" }, s.files), el("td", { class: "num" }, bytes(s.size)), el("td", { class: "num" }, s.added),
      el("td", { class: "num" }, s.removed), el("td", { class: "num" }, s.changed), el("td", {}, pick));
  }));
  form.hidden = snapshots.length === 0;
}

async function restore() {
  const status = document.getElementById("restore-status");
  const number = document.getElementById("restore-number").value.trim();
  const sub = document.getElementById("restore-sub").value.trim();
  if (!/^\d+$/.test(number)) throw new ApiError(`snapshot "${number}" is not a number`);
  const body = { link: document.getElementById("history-link").value.trim(), number: Number(number),
    output: document.getElementById("restore-output").value.trim(), sub: sub || null };
  let files = 0;
  status.textContent = "Restoring…";
  const done = await apiStream("folder-restore", body, () => { files += 1; status.textContent = `Restoring… ${files} files`; });
  status.textContent = `Restored snapshot ${done.number}: ${done.files} files, ${bytes(done.size)} into ${body.output}.`;
  document.body.dataset.restored = String(done.number);
}

function setUpSync() {
  document.getElementById("sync-add-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    showError("");
    const link = document.getElementById("sync-add-link").value.trim();
    try {
      const added = await api("POST", "sync-add", { path: document.getElementById("sync-add-path").value.trim(), link: link || null });
      document.getElementById("sync-added").textContent = added.write_link
        ? `New folder. Its write link, for your other devices (shown once): ${added.write_link}` : `Joined: ${added.path}`;
      await loadSync();
    } catch (err) { showError(err.message); }
  });
  document.getElementById("history-form").addEventListener("submit", (e) => {
    e.preventDefault();
    showError("");
    loadHistory(document.getElementById("history-link").value.trim()).catch((err) => showError(err.message));
  });
  document.getElementById("restore-form").addEventListener("submit", (e) => {
    e.preventDefault();
    showError("");
    restore().catch((err) => { document.getElementById("restore-status").textContent = ""; showError(err.message); });
  });
}

// -- Earnings -------------------------------------------------------------------

function drawChart(perDay) {
  const days = Object.keys(perDay).sort();
  const width = 720, height = 220, pad = 30;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  const max = Math.max(1, ...days.map((d) => perDay[d]));
  const step = (width - 2 * pad) / Math.max(1, days.length);
  days.forEach((day, i) => {
    const sats = perDay[day];
    const h = (height - 2 * pad) * sats / max;
    const bar = document.createElementNS(SVG, "rect");
    bar.setAttribute("class", "bar");
    const barWidth = Math.min(step * 0.8, 48);
    bar.setAttribute("x", pad + i * step + (step - barWidth) / 2);
    bar.setAttribute("y", height - pad - h);
    bar.setAttribute("width", barWidth);
    bar.setAttribute("height", h);
    bar.dataset.day = day;
    bar.dataset.sats = sats;
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${day}: ${sats} sats`;
    bar.append(title);
    const label = document.createElementNS(SVG, "text");
    label.setAttribute("class", "axis");
    label.setAttribute("x", pad + i * step + step / 2);
    label.setAttribute("y", height - pad + 14);
    label.setAttribute("text-anchor", "middle");
    label.textContent = day;
    const value = document.createElementNS(SVG, "text");
    value.setAttribute("class", "axis");
    value.setAttribute("x", pad + i * step + step / 2);
    value.setAttribute("y", height - pad - h - 4);
    value.setAttribute("text-anchor", "middle");
    value.textContent = sats + " sats";
    svg.append(bar, label, value);
  });
  if (!days.length) {
    const empty = document.createElementNS(SVG, "text");
    empty.setAttribute("class", "axis");
    empty.setAttribute("x", width / 2);
    empty.setAttribute("y", height / 2);
    empty.setAttribute("text-anchor", "middle");
    empty.textContent = "nothing earned yet";
    svg.append(empty);
  }
  document.getElementById("chart").replaceChildren(svg);
}

// The service balance with each peer and in total, as `mu earnings` prints it (specs/payments.md §Service balance).
const BALANCE_COLUMNS = ["given", "taken", "net", "paid_in", "paid_out"];

function drawBalances(balances) {
  const cells = (side) => BALANCE_COLUMNS.map((key) => el("td", { class: "num", "data-key": key }, side[key]));
  document.getElementById("balances").replaceChildren(...Object.entries(balances.per_peer).map(([peer, side]) =>
    el("tr", { "data-peer": peer }, el("td", { title: peer }, shortId(peer)), ...cells(side))));
  document.getElementById("balance-total").replaceChildren(el("tr", { class: "total" }, el("td", {}, "Total"), ...cells(balances)));
}

async function loadEarnings() {
  const [earnings, channels] = await Promise.all([api("GET", "earnings"), api("GET", "web/channels")]);
  const card = (label, value) => el("div", { class: "card" }, el("b", {}, value), label);
  document.getElementById("totals").replaceChildren(card("sats earned", earnings.earned), card("pending", earnings.pending),
    card("settled", earnings.settled), card("sats spent", earnings.spent));
  drawChart(earnings.per_day);
  document.getElementById("per-peer").replaceChildren(...Object.entries(earnings.per_peer).map(([peer, r]) =>
    el("tr", {}, el("td", { title: peer }, shortId(peer)), el("td", { class: "num" }, r.earned), el("td", { class: "num" }, r.pending),
      el("td", { class: "num" }, r.settled), el("td", { class: "num" }, r.spent))));
  drawBalances(earnings.balances);
  document.getElementById("wallet").textContent = channels.wallet_balance === null
    ? "Wallet balance unavailable (chain not reachable)"
    : `Wallet balance: ${channels.wallet_balance} sats (${channels.wallet_address})`;
  document.getElementById("channels").replaceChildren(...channels.channels.map((c) => {
    const cell = el("td", {});
    if (c.closable) {
      const close = el("button", { type: "button", class: "close" }, "Close");
      close.addEventListener("click", async () => {
        await api("POST", "web/channels/close", { channel_id: c.channel_id });
        await loadEarnings();
      });
      cell.append(close);
    }
    return el("tr", {}, el("td", { title: c.channel_id }, shortId(c.channel_id)), el("td", {}, c.role),
      el("td", { title: c.peer }, shortId(c.peer)), el("td", {}, c.state), el("td", { class: "num" }, `${c.total} / ${c.capacity}`), cell);
  }));
}

// -- Network ---------------------------------------------------------------------

async function loadNetwork() {
  const net = await api("GET", "web/network");
  document.getElementById("dht-size").textContent =
    `About ${net.dht_size_estimate} nodes in the DHT; ${net.peers.length} in this node's routing table.`;
  document.getElementById("hosts").replaceChildren(...net.hosts.map((h) =>
    el("tr", {}, el("td", { title: h.node_id }, shortId(h.node_id)), el("td", { class: "num" }, h.requests),
      el("td", { class: "num" }, h.sats), el("td", { class: "num" }, h.price_per_mib),
      el("td", { class: "num speed" }, h.bytes_per_s === null ? "–" : bytes(h.bytes_per_s) + "/s"), el("td", {}, when(h.last_at)))));
  document.getElementById("peers").replaceChildren(...net.peers.map((p) =>
    el("tr", {}, el("td", { title: p.node_id }, shortId(p.node_id)), el("td", {}, `${p.host}:${p.port}`),
      el("td", {}, p.mu ? "yes" : "no"), el("td", {}, `${Math.round(p.seen_ago_s)} s ago`))));
}

// -- Settings ----------------------------------------------------------------------

const SETTING_LABELS = {
  price_get: "Price to serve (sats per MiB)", price_put: "Price to store (sats per MiB)",
  free_allowance: "Free allowance per peer (sats)", quota: "Storage limit (bytes)", retention: "Retention of paid chunks (seconds)",
};

async function loadSettings() {
  const { settings, applies, applies_now: now } = await api("GET", "web/settings");
  const form = document.getElementById("settings-form");
  const fields = Object.entries(SETTING_LABELS).map(([name, label]) =>
    el("label", {}, label, el("span", {},
      el("input", { type: "text", inputmode: "numeric", name, value: settings[name] ?? "" }),
      el("span", { class: "muted applies", "data-name": name }, now.includes(name) ? " applies now" : " applies " + applies))));
  form.replaceChildren(...fields, el("button", { type: "submit" }, "Save"),
    el("p", { class: "muted" }, "Prices, free allowance and retention are this node's signed terms: peers hold the ones it " +
      "signed at start, so new values take effect when the node restarts."));
}

function setUpSettings() {
  document.getElementById("settings-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const error = document.getElementById("settings-error");
    const status = document.getElementById("settings-status");
    error.textContent = "";
    status.textContent = "";
    const changes = {};
    for (const input of e.target.querySelectorAll("input")) {
      if (input.value.trim() === "") continue;
      const value = Number(input.value.trim());
      if (!/^\d+$/.test(input.value.trim())) {
        error.textContent = `${SETTING_LABELS[input.name]}: "${input.value}" is not a whole number`;
        return;
      }
      changes[input.name] = value;
    }
    try {
      const saved = await api("POST", "web/settings", changes);
      const live = Object.keys(changes).filter((name) => saved.applies_now.includes(name));
      status.textContent = "Saved." + (live.length ? ` Applied now: ${live.join(", ")}; the rest at the next start.` : " Applies at the next start.");
    } catch (err) {
      error.textContent = err.message;
    }
  });
}

// -- Pages ------------------------------------------------------------------------

const PAGES = { files: loadFiles, open: async () => {}, sync: loadSync, earnings: loadEarnings, network: loadNetwork, settings: loadSettings };

async function show(page) {
  showError("");
  delete document.body.dataset.ready;
  clearInterval(syncTimer);
  if (page === "sync") syncTimer = setInterval(() => loadSync().catch((err) => showError(err.message)), SYNC_REFRESH_MS);
  for (const name of Object.keys(PAGES)) document.getElementById("page-" + name).hidden = name !== page;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.dataset.page === page);
  try {
    await PAGES[page]();
  } catch (err) {
    showError(err.message);
  }
  document.body.dataset.ready = page;
}

function pageOf(path) {
  const name = path.replace(/^\//, "");
  return name in PAGES ? name : "files";
}

document.addEventListener("DOMContentLoaded", async () => {
  setUpFiles();
  setUpOpen();
  setUpSync();
  setUpSettings();
  for (const a of document.querySelectorAll("nav a")) {
    a.addEventListener("click", (e) => {
      e.preventDefault();
      history.pushState(null, "", a.getAttribute("href"));
      show(a.dataset.page);
    });
  }
  window.addEventListener("popstate", () => show(pageOf(location.pathname)));
  api("GET", "status").then((s) => { document.getElementById("node-id").textContent = "node " + shortId(s.node_id); })
    .catch((err) => showError(err.message));
  const page = pageOf(location.pathname);
  await show(page);
  if (page === "open" && location.hash.startsWith("#mu:")) {
    // The link (and its key) came in the fragment: browsers never send it in a request; only this
    // page reads it and hands it to this node.
    const link = decodeURIComponent(location.hash.slice(1));
    document.getElementById("open-link").value = link;
    openLink(link).catch((err) => showError(err.message));
  }
});
