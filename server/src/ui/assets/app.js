// Switch dashboard: the little the pages need beyond HTML.
// - forms with data-confirm ask before posting;
// - "Back" links go back;
// - the overview refreshes its figures and shows rates from the hub's counters;
// - the live tail follows the session's event stream.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (e) => {
      if (!window.confirm(form.dataset.confirm)) e.preventDefault();
    });
  }
  for (const a of document.querySelectorAll("a.back")) {
    a.addEventListener("click", (e) => {
      if (window.history.length > 1) {
        e.preventDefault();
        window.history.back();
      }
    });
  }
  const stats = document.getElementById("stats");
  if (stats) followStats(stats);
  const tail = document.getElementById("tail");
  if (tail) followTail(tail);
});

const number = new Intl.NumberFormat("en-US");
const rate = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });

function age(ms) {
  if (ms === null || ms === undefined) return "none waiting";
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3600000) return `${(ms / 60000).toFixed(1)} min`;
  return `${(ms / 3600000).toFixed(1)} h`;
}

// Polls the hub's counters; a rate is the change between two polls.
function followStats(root) {
  const url = root.dataset.src;
  let previous = null;
  async function poll() {
    try {
      const res = await fetch(url, { credentials: "same-origin", cache: "no-store" });
      if (res.redirected || !res.ok) {
        root.dataset.state = "stale";
        return;
      }
      const now = await res.json();
      for (const el of root.querySelectorAll("[data-stat]")) {
        const v = now[el.dataset.stat];
        if (el.dataset.stat === "oldest_age_ms") el.textContent = age(v);
        else if (typeof v === "number") el.textContent = number.format(v);
      }
      if (previous && now.at_ms > previous.at_ms) {
        const secs = (now.at_ms - previous.at_ms) / 1000;
        for (const el of root.querySelectorAll("[data-rate]")) {
          const keys = el.dataset.rate.split("+");
          const delta = keys.reduce((sum, k) => sum + ((now[k] || 0) - (previous[k] || 0)), 0);
          el.textContent = `${rate.format(Math.max(0, delta) / secs)}/s`;
        }
      }
      previous = now;
      root.dataset.state = "live";
    } catch (_) {
      root.dataset.state = "stale";
    }
  }
  poll();
  setTimeout(poll, 1000);
  setInterval(poll, 2000);
}

function cell(row, text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
  return td;
}

// The live tail: one row per message, newest on top, at most 500 kept.
function followTail(root) {
  const rows = document.getElementById("tail-rows");
  const status = document.getElementById("tail-status");
  const pause = document.getElementById("tail-pause");
  const clear = document.getElementById("tail-clear");
  let paused = false;
  let held = [];
  let seen = 0;
  const show = (m) => {
    const tr = document.createElement("tr");
    tr.className = "fresh";
    cell(tr, (m.created_at || "").replace("T", " ").replace("Z", ""), "mono");
    const idCell = document.createElement("td");
    const link = document.createElement("a");
    link.href = `/ui/messages/${encodeURIComponent(m.id)}`;
    link.textContent = m.id;
    link.className = "mono";
    idCell.appendChild(link);
    tr.appendChild(idCell);
    cell(tr, m.topic);
    cell(tr, m.author || "");
    cell(tr, String(m.matched), "num");
    const body = JSON.stringify(m.body);
    cell(tr, body.length > 160 ? `${body.slice(0, 160)}…` : body, "mono wrap");
    rows.insertBefore(tr, rows.firstChild);
    while (rows.children.length > 500) rows.removeChild(rows.lastChild);
  };
  const events = new EventSource(root.dataset.src);
  events.addEventListener("open", () => {
    status.textContent = "Live: new messages appear at the top.";
    status.className = "badge ok";
  });
  events.addEventListener("message", (e) => {
    let m;
    try { m = JSON.parse(e.data); } catch (_) { return; }
    seen += 1;
    root.dataset.seen = String(seen);
    if (paused) held.push(m); else show(m);
  });
  events.addEventListener("error", (e) => {
    if (e.data) {
      status.textContent = "Closed by the hub: this page fell too far behind. Reload to follow again.";
      status.className = "badge bad";
      events.close();
      return;
    }
    status.textContent = events.readyState === EventSource.CLOSED
      ? "Closed: check the pattern and filter, or sign in again."
      : "Reconnecting…";
    status.className = "badge warn";
  });
  pause.addEventListener("click", () => {
    paused = !paused;
    pause.textContent = paused ? "Resume" : "Pause";
    if (!paused) {
      for (const m of held) show(m);
      held = [];
    }
  });
  clear.addEventListener("click", () => { rows.textContent = ""; });
}
