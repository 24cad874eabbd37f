// Shared by the peer's dashboard (app.js) and the server's status page (server.js).
//
// Rules the Content-Security-Policy and the data demand: no inline script, no eval, and the
// DOM is built with createElement/textContent only, never from HTML strings, because names and
// messages come from other peers.
"use strict";

const P2P = (() => {
  // ---------------------------------------------------------------------------------------
  // DOM

  /** Creates `<tag>` with attributes, event handlers and children (strings become text). */
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key === "on") for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
      else if (key === "style" || key.startsWith("on")) throw new Error("not allowed: " + key);
      else if (value === true) el.setAttribute(key, "");
      else el.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  /** Sets `el`'s text only when it changed (keeps selections and avoids layout work). */
  function setText(el, value) {
    const text = String(value);
    if (el.textContent !== text) el.textContent = text;
  }

  /** Sets an attribute only when it changed. */
  function setAttr(el, name, value) {
    if (value === null || value === undefined) {
      if (el.hasAttribute(name)) el.removeAttribute(name);
      return;
    }
    const text = String(value);
    if (el.getAttribute(name) !== text) el.setAttribute(name, text);
  }

  /**
   * Makes `tbody` show one row per item, in order, reusing the row whose `data-key` matches
   * so a focused button keeps its focus while live data arrives. `create(item)` builds a row,
   * `update(row, item)` refreshes it.
   */
  function syncRows(tbody, items, key, create, update) {
    const old = new Map();
    for (const row of tbody.children) old.set(row.dataset.key, row);
    let at = tbody.firstElementChild;
    for (const item of items) {
      const k = String(key(item));
      let row = old.get(k);
      if (row) old.delete(k);
      else {
        row = create(item);
        row.dataset.key = k;
      }
      update(row, item);
      if (row !== at) tbody.insertBefore(row, at);
      else at = at.nextElementSibling;
    }
    for (const row of old.values()) row.remove();
  }

  /** A `<td>` with the label narrow screens show beside its value; no label: the row's buttons. */
  function cell(label, ...children) {
    return h("td", label ? { "data-label": label } : { class: "actions" }, ...children);
  }

  /** A long id shown short, with the full id in its tooltip. */
  function idSpan(id, length, primary) {
    return h("span", { class: primary ? "mono" : "mono id", title: id, text: shortId(id, length) });
  }

  // ---------------------------------------------------------------------------------------
  // Formatting

  const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

  /** 25165824 → "24.0 MiB". */
  function bytes(n) {
    if (!Number.isFinite(n) || n < 0) return "–";
    let i = 0;
    while (n >= 1024 && i < UNITS.length - 1) {
      n /= 1024;
      i += 1;
    }
    return i === 0 ? `${n} B` : `${n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : n.toFixed(0)} ${UNITS[i]}`;
  }

  /** Bytes per second as "12.3 MiB/s". */
  function speed(bps) {
    return bps > 0 ? `${bytes(bps)}/s` : "–";
  }

  /** Seconds as "42 s", "3 min 5 s", "2 h 10 min". */
  function duration(secs) {
    if (secs === null || secs === undefined || !Number.isFinite(secs) || secs < 0) return "–";
    if (secs < 0.1) return "<0.1 s";
    if (secs < 10) return `${secs.toFixed(1)} s`;
    const s = Math.round(secs);
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
    return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
  }

  /** A heartbeat age in milliseconds as "3 s ago". */
  function ago(ms) {
    return ms < 1000 ? "just now" : `${duration(ms / 1000)} ago`;
  }

  /** The first `length` characters of an id, with an ellipsis. */
  function shortId(id, length = 12) {
    if (!id) return "–";
    return id.length > length ? `${id.slice(0, length)}…` : id;
  }

  /** Unix milliseconds as a time today, or a date and time. */
  function clock(unixMs) {
    const at = new Date(unixMs);
    const today = new Date().toDateString() === at.toDateString();
    const time = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    return today ? time : `${at.toLocaleDateString()} ${time}`;
  }

  // ---------------------------------------------------------------------------------------
  // The status line

  let statusTimer = null;

  /** Shows `text` in the status line; errors stay until the next message. */
  function say(text, kind = "info") {
    const line = document.getElementById("status");
    if (!line) return;
    clearTimeout(statusTimer);
    line.textContent = text;
    line.dataset.kind = kind;
    line.hidden = !text;
    if (kind !== "error" && text) statusTimer = setTimeout(() => say(""), 6000);
  }

  // ---------------------------------------------------------------------------------------
  // The API

  /** An error the API answered (`{"error": {"code", "message"}}`) or the network raised. */
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** The error a failed response carries. */
  async function errorOf(response) {
    try {
      const body = await response.json();
      if (body && body.error) return new ApiError(response.status, body.error.code, body.error.message);
    } catch (_) {
      // not JSON: fall through
    }
    return new ApiError(response.status, "http_" + response.status, `${response.status} ${response.statusText}`);
  }

  /** Calls the API; resolves to the JSON answer, rejects with an ApiError. */
  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch("/api/v1" + path, init);
    } catch (err) {
      throw new ApiError(0, "network", "The node does not answer: is it still running?");
    }
    if (!response.ok) throw await errorOf(response);
    if (response.status === 204) return null;
    return response.json();
  }

  /** Shows an API error in the status line, with a hint when the browser is not logged in. */
  function report(err, doing) {
    if (err instanceof ApiError && err.status === 401) {
      say("Not logged in: open the login URL the node printed when it started (…/login?token=…).", "error");
    } else {
      say(`${doing ? doing + ": " : ""}${err.message}`, "error");
    }
  }

  // ---------------------------------------------------------------------------------------
  // Live data

  const POLL_MS = 2000;
  const RETRY_STREAM_MS = 15000;

  /**
   * Keeps the page live: the event stream when the node has one, polling otherwise.
   * `handlers` maps event names to functions of the parsed data; `poll()` fetches everything
   * once (used before the stream opens and while it is down). `onMode(mode)` hears
   * "live", "polling" or "offline".
   */
  function live(handlers, poll, onMode) {
    let pollTimer = null;
    let source = null;

    function startPolling() {
      if (pollTimer) return;
      onMode("polling");
      const tick = async () => {
        try {
          await poll();
          onMode("polling");
        } catch (err) {
          onMode("offline");
          report(err);
          // Not logged in: asking again changes nothing until the login URL is opened.
          if (err instanceof ApiError && err.status === 401) stopPolling();
        }
      };
      tick();
      pollTimer = setInterval(tick, POLL_MS);
    }

    function stopPolling() {
      clearInterval(pollTimer);
      pollTimer = null;
    }

    function open() {
      if (typeof EventSource === "undefined") return startPolling();
      source = new EventSource("/api/v1/events");
      source.addEventListener("open", () => {
        stopPolling();
        onMode("live");
      });
      source.addEventListener("error", () => {
        if (source.readyState === EventSource.CLOSED) {
          // The node has no stream (or refused it): poll, and try the stream again later.
          source = null;
          startPolling();
          setTimeout(() => {
            if (!source) open();
          }, RETRY_STREAM_MS);
        } else {
          onMode("offline"); // the browser reconnects by itself
        }
      });
      for (const [name, fn] of Object.entries(handlers)) {
        source.addEventListener(name, (ev) => {
          let data;
          try {
            data = JSON.parse(ev.data);
          } catch (_) {
            return;
          }
          fn(data);
        });
      }
    }

    // Show something at once, whatever the stream does.
    poll().catch((err) => report(err));
    open();
  }

  return { h, setText, setAttr, syncRows, cell, idSpan, bytes, speed, duration, ago, shortId, clock, say, api, report, live, ApiError };
})();
