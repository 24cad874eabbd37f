// The peer's dashboard: Network, My files, Transfers, Peers, Messages.
//
// State arrives from the event stream (or polling) into `state`, and each view renders from
// it. Rows carry data-* attributes (data-file-id, data-handle, data-state) that tests and
// scripts can read.
"use strict";

(() => {
  const { h, setText, setAttr, syncRows, cell, idSpan, bytes, speed, duration, ago, clock, say, api, report, live } = P2P;
  const $ = (id) => document.getElementById(id);

  const OUT_KEY = "p2p.out";
  const SEARCH_DEBOUNCE_MS = 300;
  const RESEARCH_MIN_MS = 3000;
  const ACTIVE = new Set(["looking_up", "running", "flushing"]);
  const STATE_LABEL = {
    looking_up: "Looking up",
    running: "Downloading",
    flushing: "Finishing",
    done: "Done",
    failed: "Failed",
    cancelled: "Cancelled",
  };

  const state = {
    status: null,
    files: [],
    network: { files: [], total: 0 },
    peers: { peers: [], total: 0 },
    downloads: new Map(), // handle → DownloadView
    messages: [],
    messageKeys: new Set(),
    seenMessages: 0,
    view: "network",
  };

  // ---------------------------------------------------------------------------------------
  // Views and navigation

  const VIEWS = ["network", "files", "transfers", "peers", "messages"];

  function showView() {
    const wanted = location.hash.replace(/^#/, "");
    state.view = VIEWS.includes(wanted) ? wanted : "network";
    for (const section of document.querySelectorAll("section.view")) {
      section.hidden = section.dataset.view !== state.view;
    }
    for (const link of document.querySelectorAll("nav.tabs a")) {
      if (link.dataset.view === state.view) {
        link.setAttribute("aria-current", "page");
        // On a narrow screen the tabs scroll sideways: keep the current one in sight.
        link.scrollIntoView({ block: "nearest", inline: "nearest" });
      } else link.removeAttribute("aria-current");
    }
    document.body.dataset.view = state.view;
    if (state.view === "messages") {
      state.seenMessages = state.messages.length;
      renderMessages();
    }
  }

  // ---------------------------------------------------------------------------------------
  // Header

  function renderStatus() {
    const s = state.status;
    if (!s) return;
    const id = $("node-id");
    setText(id, P2P.shortId(s.node_id, 16));
    setAttr(id, "title", `This peer's node id: ${s.node_id}`);
    // Every index the peer uses: one is named, several are counted (each in the tooltip).
    const indexes = s.indexes || [];
    const up = indexes.filter((i) => i.state === "registered").length;
    let index = "no index";
    if (indexes.length === 1) {
      index = `index ${indexes[0].addr} · ${up ? "registered" : "not registered"}`;
    } else if (indexes.length > 1) {
      index = `${indexes.length} indexes · registered with ${up}`;
    }
    const el = $("node-index");
    setText(el, `${index} · serving at ${s.advertised_addr || s.listen_addr}`);
    setAttr(el, "title", indexes.map((i) => `${i.addr}: ${i.state}${i.error ? ` (${i.error})` : ""}`).join("\n"));
  }

  function setMode(mode) {
    const dot = $("live-dot");
    setAttr(dot, "data-mode", mode);
    setAttr(dot, "title", { live: "Live", polling: "Updating every 2 s", offline: "Not connected" }[mode]);
  }

  function setCount(id, n) {
    setText($(id), n > 0 ? String(n) : "");
  }

  // ---------------------------------------------------------------------------------------
  // Network

  let searchTimer = null;
  let lastSearch = 0;

  function outDir() {
    return $("out-dir").value.trim();
  }

  async function search() {
    const q = $("search-input").value.trim();
    lastSearch = Date.now();
    try {
      const data = await api("GET", "/network/files" + (q ? "?q=" + encodeURIComponent(q) : ""));
      if ($("search-input").value.trim() === q) {
        state.network = { files: data.files, total: data.total, q };
        renderNetwork();
      }
    } catch (err) {
      report(err, "Search");
    }
  }

  function networkChanged(data) {
    const q = $("search-input").value.trim();
    if (!q) {
      state.network = { files: data.files, total: data.total, q };
      renderNetwork();
    } else if (Date.now() - lastSearch > RESEARCH_MIN_MS) {
      search(); // a query is active: ask again for its hosts, at most every few seconds
    }
  }

  async function download(file, button) {
    const out = outDir();
    if (!out) {
      say("Choose the folder to save downloads to first (the field above the list).", "error");
      $("out-dir").focus();
      return;
    }
    button.disabled = true;
    try {
      const view = await api("POST", "/downloads", { id: file.file_id, out });
      upsertDownload(view);
      const what = file.kind === "folder" ? `folder ${file.name} (${count(file.files, "file")})` : file.name;
      say(`Downloading ${what} to ${out}: see Transfers.`);
    } catch (err) {
      report(err, `Download ${file.name}`);
    } finally {
      button.disabled = false;
    }
  }

  function renderNetwork() {
    const { files, total, q } = state.network;
    syncRows(
      $("network-rows"),
      files,
      (f) => f.file_id,
      (f) => {
        const btn = h("button", { type: "button", class: "primary", "data-testid": "download-btn", text: "Download" });
        btn.addEventListener("click", () => download(btn.file, btn));
        const row = h(
          "tr",
          { "data-file-id": f.file_id },
          cell("Name", h("div", { class: "name" }), h("div", { class: "muted small", "data-testid": "network-detail" }), idSpan(f.file_id)),
          cell("Size"),
          cell("Hosts"),
          cell("", btn),
        );
        row.cells[1].className = "num";
        row.cells[2].className = "num";
        return row;
      },
      (row, f) => {
        const folder = f.kind === "folder";
        setAttr(row, "data-kind", folder ? "folder" : "file");
        setText(row.cells[0].firstChild, folder ? `${f.name}/` : f.name);
        // A folder: how many files; a file inside a shared folder: where it is in it.
        const detail = folder ? `Folder · ${count(f.files, "file")}` : f.path ? `in ${f.path}` : "";
        const detailEl = row.cells[0].children[1];
        setText(detailEl, detail);
        detailEl.hidden = !detail;
        setText(row.cells[1], bytes(f.size));
        setText(row.cells[2], f.hosts);
        setAttr(row.cells[2], "title", `${f.hosts} peer${f.hosts === 1 ? "" : "s"} host it`);
        row.querySelector("button").file = f;
        setAttr(row.querySelector("button"), "aria-label", folder ? `Download folder ${f.name}` : `Download ${f.name}`);
      },
    );
    $("network-empty").hidden = files.length > 0;
    setText($("network-empty"), q ? `No file name matches “${q}”.` : "No files on the network yet.");
    const shown = files.length < total ? ` (showing ${files.length})` : "";
    setText($("network-summary"), `${total} file${total === 1 ? "" : "s"} or folder${total === 1 ? "" : "s"}${q ? ` matching “${q}”` : " on the network"}${shown}`);
  }

  // ---------------------------------------------------------------------------------------
  // My files

  async function refreshFiles() {
    try {
      state.files = (await api("GET", "/files")).files;
      renderFiles();
    } catch (err) {
      report(err);
    }
  }

  async function unshare(file, button) {
    button.disabled = true;
    try {
      await api("DELETE", "/shares/" + encodeURIComponent(file.file_id));
      say(`Stopped sharing ${file.name}.`);
      await refreshFiles();
    } catch (err) {
      report(err, `Stop sharing ${file.name}`);
      button.disabled = false;
    }
  }

  function renderFiles() {
    syncRows(
      $("files-rows"),
      state.files,
      (f) => f.file_id,
      (f) => {
        const btn = h("button", { type: "button", "data-testid": "unshare-btn", text: "Stop sharing" });
        btn.addEventListener("click", () => unshare(btn.file, btn));
        const row = h(
          "tr",
          { "data-file-id": f.file_id },
          cell("Name", h("div", { class: "name" }), h("div", { class: "muted small", "data-testid": "files-detail" }), idSpan(f.file_id)),
          cell("Size"),
          cell("Path", h("span", { class: "mono path" })),
          cell("", btn),
        );
        row.cells[1].className = "num";
        return row;
      },
      (row, f) => {
        // A folder shared as a whole is one row, shown as the Network view shows one.
        const folder = f.kind === "folder";
        setAttr(row, "data-kind", folder ? "folder" : "file");
        setText(row.cells[0].firstChild, folder ? `${f.name}/` : f.name);
        const detailEl = row.cells[0].children[1];
        setText(detailEl, folder ? `Folder · ${count(f.files, "file")}` : "");
        detailEl.hidden = !folder;
        setText(row.cells[1], bytes(f.size));
        const path = row.cells[2].firstChild;
        setText(path, f.path);
        setAttr(path, "title", f.path);
        row.querySelector("button").file = f;
        setAttr(row.querySelector("button"), "aria-label", folder ? `Stop sharing folder ${f.name}` : `Stop sharing ${f.name}`);
      },
    );
    $("files-empty").hidden = state.files.length > 0;
    setCount("count-files", state.files.length);
  }

  async function share(event) {
    event.preventDefault();
    const path = $("share-path").value.trim();
    if (!path) return say("Type the path of a file or folder on the node's machine.", "error");
    try {
      const data = await api("POST", "/shares", { path });
      const folder = data.files.find((f) => f.kind === "folder");
      say(`Shared ${folder ? `folder ${path} (${count(folder.files, "file")})` : path}.`);
      $("share-path").value = "";
      await refreshFiles();
    } catch (err) {
      report(err, `Share ${path}`);
    }
  }

  /** Sends one file with a PUT (XMLHttpRequest, for its upload progress). */
  function upload(file) {
    const bar = h("progress", { max: file.size || 1, value: 0 });
    const pct = h("span", { class: "num", text: "0 %" });
    const item = h(
      "li",
      { "data-testid": "upload", "data-state": "uploading", "data-name": file.name },
      h("span", { class: "name", text: file.name, title: file.name }),
      bar,
      pct,
    );
    $("uploads").prepend(item);
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", "/api/v1/uploads/" + encodeURIComponent(file.name));
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.addEventListener("progress", (ev) => {
      if (!ev.lengthComputable) return;
      bar.max = ev.total || 1;
      bar.value = ev.loaded;
      pct.textContent = `${Math.floor((ev.loaded * 100) / (ev.total || 1))} %`;
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        bar.value = bar.max;
        pct.textContent = "100 %";
        item.dataset.state = "done";
        say(`Uploaded and shared ${file.name} (${bytes(file.size)}).`);
        refreshFiles();
      } else {
        let message = `${xhr.status} ${xhr.statusText}`;
        try {
          message = JSON.parse(xhr.responseText).error.message;
        } catch (_) {
          // keep the status line
        }
        item.dataset.state = "failed";
        pct.textContent = "failed";
        say(`Upload ${file.name}: ${message}`, "error");
      }
    });
    xhr.addEventListener("error", () => {
      item.dataset.state = "failed";
      pct.textContent = "failed";
      say(`Upload ${file.name}: the connection was lost.`, "error");
    });
    xhr.send(file);
  }

  function uploadAll(files) {
    for (const file of files) upload(file);
  }

  // ---------------------------------------------------------------------------------------
  // Transfers

  // A POST answer and the event stream race: keep a job's view only if it is newer than the
  // one shown (a job that finished before its POST answered must not go back to "Looking up").
  function upsertDownload(view) {
    if (!view || view.handle === undefined) return;
    const shown = state.downloads.get(view.handle);
    if (shown && shown.version > view.version) return;
    state.downloads.set(view.handle, view);
    renderTransfers();
  }

  async function cancel(handle, button) {
    button.disabled = true;
    try {
      upsertDownload(await api("DELETE", `/downloads/${handle}`));
    } catch (err) {
      report(err, "Cancel");
    } finally {
      button.disabled = false;
    }
  }

  async function resume(handle, button) {
    button.disabled = true;
    try {
      upsertDownload(await api("POST", `/downloads/${handle}/resume`));
    } catch (err) {
      report(err, "Resume");
    } finally {
      button.disabled = false;
    }
  }

  /** "1 file", "3 files". */
  function count(n, what) {
    return `${n} ${what}${n === 1 ? "" : "s"}`;
  }

  /** A folder job's files: "12 / 5000 files (10 already there, 1 conflict, 2 failed)". */
  function folderCounts(d) {
    const extra = [];
    if (d.files_skipped > 0) extra.push(`${d.files_skipped} already there`);
    if (d.conflicts > 0) extra.push(count(d.conflicts, "conflict"));
    if (d.files_failed > 0) extra.push(`${d.files_failed} failed`);
    return `${d.files_done} / ${count(d.files_total, "file")}${extra.length ? ` (${extra.join(", ")})` : ""}`;
  }

  function renderTransfers() {
    // Newest first.
    const list = [...state.downloads.values()].sort((a, b) => b.handle - a.handle);
    syncRows(
      $("transfer-rows"),
      list,
      (d) => d.handle,
      (d) => {
        const cancelBtn = h("button", { type: "button", "data-testid": "cancel-btn", text: "Cancel" });
        const resumeBtn = h("button", { type: "button", "data-testid": "resume-btn", text: "Resume" });
        cancelBtn.addEventListener("click", () => cancel(d.handle, cancelBtn));
        resumeBtn.addEventListener("click", () => resume(d.handle, resumeBtn));
        const row = h(
          "tr",
          { "data-handle": d.handle },
          cell("Name", h("div", { class: "name" }), h("div", { class: "muted small" })),
          cell("Progress", h("div", { class: "progress" }, h("progress", { max: 100, value: 0 }), h("span", { class: "pct num" }))),
          cell("Speed"),
          cell("ETA"),
          cell("Hosts"),
          cell("State", h("span", { class: "badge" })),
          cell("", cancelBtn, resumeBtn),
        );
        for (const i of [2, 3, 4]) row.cells[i].className = "num";
        return row;
      },
      (row, d) => {
        setAttr(row, "data-state", d.state);
        setAttr(row, "data-file-id", d.file_id || d.folder_id);
        setAttr(row, "data-kind", d.folder_id ? "folder" : "file");
        setText(row.cells[0].firstChild, d.name || d.target);
        const detail = d.state === "done" && d.path ? `Saved as ${d.path}` : d.state === "failed" && d.error ? d.error : `to ${d.out}`;
        // A folder is one row: its files in place out of its files, and what is in the way.
        const folderNote = d.folder_id && d.files_total > 0 ? folderCounts(d) : "";
        setText(row.cells[0].lastChild, folderNote ? `${folderNote} · ${detail}` : detail);
        setAttr(row.cells[0].lastChild, "title", detail);
        const bar = row.querySelector("progress");
        // The bar's max is the job's size; an empty job shows 0 of 1, or 1 of 1 once done.
        const max = d.size > 0 ? d.size : 1;
        const value = d.size > 0 ? Math.min(d.done, d.size) : d.state === "done" ? 1 : 0;
        if (Number(bar.max) !== max) bar.max = max;
        if (Number(bar.value) !== value) bar.value = value;
        setText(row.querySelector(".pct"), `${Math.floor(d.percent)} %`);
        setAttr(row.cells[1], "title", `${bytes(d.done)} of ${d.size ? bytes(d.size) : "?"}${d.files_total > 1 ? ` · ${d.files_done} of ${d.files_total} files` : ""}`);
        const running = ACTIVE.has(d.state);
        // A finished transfer shows its average speed.
        const average = d.state === "done" && d.elapsed_ms > 0 ? ((d.done - d.resumed) * 1000) / d.elapsed_ms : 0;
        setText(row.cells[2], running ? speed(d.speed_bps) : average > 0 ? `avg ${speed(average)}` : "–");
        setText(row.cells[3], running ? duration(d.eta_secs) : d.state === "done" ? `took ${duration(d.elapsed_ms / 1000)}` : "–");
        setText(row.cells[4], `${d.hosts_delivering} / ${d.hosts_known}`);
        setAttr(row.cells[4], "title", `${d.hosts_delivering} host(s) delivering of ${d.hosts_known} known`);
        const badge = row.querySelector(".badge");
        setText(badge, STATE_LABEL[d.state] || d.state);
        setAttr(badge, "data-state", d.state);
        row.querySelector("[data-testid=cancel-btn]").hidden = !running;
        row.querySelector("[data-testid=resume-btn]").hidden = !(d.state === "cancelled" || d.state === "failed");
      },
    );
    $("transfers-empty").hidden = list.length > 0;
    setCount("count-transfers", list.filter((d) => ACTIVE.has(d.state)).length);
  }

  // ---------------------------------------------------------------------------------------
  // Peers

  function renderPeers() {
    const { peers, total } = state.peers;
    syncRows(
      $("peer-rows"),
      peers,
      (p) => p.node_id + "|" + p.peer_id,
      (p) => {
        const btn = h("button", { type: "button", "data-testid": "message-peer-btn", text: "Message" });
        btn.addEventListener("click", () => {
          $("msg-to").value = btn.addr;
          location.hash = "#messages";
          $("msg-text").focus();
        });
        const row = h(
          "tr",
          { "data-node-id": p.node_id },
          cell("Node id", idSpan(p.node_id, 16, true), h("span", { class: "badge me", text: "this peer" })),
          cell("Address", h("span", { class: "mono" })),
          cell("Files"),
          cell("Last heartbeat"),
          cell("", btn),
        );
        row.cells[2].className = "num";
        return row;
      },
      (row, p) => {
        setText(row.cells[1].firstChild, p.addr);
        setAttr(row.cells[1].firstChild, "title", `peer id ${p.peer_id}`);
        setText(row.cells[2], p.files);
        setText(row.cells[3], ago(p.last_seen_ms));
        row.querySelector(".me").hidden = !p.this_peer;
        const btn = row.querySelector("button");
        btn.addr = p.addr;
        btn.hidden = p.this_peer;
      },
    );
    $("peers-empty").hidden = peers.length > 0;
    setText($("peers-summary"), `${total} peer${total === 1 ? "" : "s"} registered with the index`);
    setCount("count-peers", peers.filter((p) => !p.this_peer).length);
    const list = $("peer-addrs");
    list.replaceChildren(...peers.filter((p) => !p.this_peer).map((p) => h("option", { value: p.addr, label: P2P.shortId(p.node_id, 16) })));
  }

  // ---------------------------------------------------------------------------------------
  // Messages

  function messageKey(m) {
    return `${m.direction}|${m.node_id}|${m.at_unix_ms}|${m.text}`;
  }

  function addMessages(list) {
    let added = false;
    for (const m of list) {
      const key = messageKey(m);
      if (state.messageKeys.has(key)) continue;
      state.messageKeys.add(key);
      state.messages.push(m);
      added = true;
    }
    if (!added) return;
    state.messages.sort((a, b) => a.at_unix_ms - b.at_unix_ms);
    if (state.view === "messages") state.seenMessages = state.messages.length;
    renderMessages();
  }

  /**
   * Where to answer a received message: the sender's address as the index lists it (its
   * node id is proved); else the address it gave for itself. `remote` is the port its
   * connection came from, which does not take messages.
   */
  function replyAddress(m) {
    const known = state.peers.peers.find((p) => p.node_id === m.node_id);
    if (known) return known.addr;
    return /^(\[[0-9a-fA-F:.]+\]|[^\s:]+):\d+$/.test(m.from) ? m.from : m.remote;
  }

  function renderMessages() {
    const box = $("messages");
    const nearBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    syncRows(
      box,
      state.messages,
      messageKey,
      (m) => {
        const who = m.direction === "out" ? "You" : m.name || P2P.shortId(m.node_id, 16);
        const to = m.direction === "out" ? ` → ${m.name || P2P.shortId(m.node_id, 16)}` : "";
        const head = h(
          "div",
          { class: "meta" },
          h("span", { class: "who", title: m.direction === "in" ? `node id ${m.node_id}\nsays it is ${m.from}\nconnected from ${m.remote}` : `node id ${m.node_id}\naddress ${m.remote}`, text: who + to }),
          h("time", { datetime: new Date(m.at_unix_ms).toISOString(), text: clock(m.at_unix_ms) }),
        );
        if (m.direction === "in") {
          const reply = h("button", { type: "button", class: "link", "data-testid": "reply-btn", text: "Reply" });
          reply.addEventListener("click", () => {
            $("msg-to").value = replyAddress(m);
            $("msg-text").focus();
          });
          head.append(reply);
        }
        return h("li", { class: `msg ${m.direction}`, "data-testid": "message", "data-direction": m.direction, "data-node-id": m.node_id }, head, h("p", { class: "text", text: m.text }));
      },
      () => {},
    );
    $("messages-empty").hidden = state.messages.length > 0;
    if (nearBottom) box.scrollTop = box.scrollHeight;
    setCount("count-messages", state.view === "messages" ? 0 : state.messages.length - state.seenMessages);
  }

  async function sendMessage(event) {
    event.preventDefault();
    const to = $("msg-to").value.trim();
    const text = $("msg-text").value;
    if (!to) return say("Say who the message is for: host:port or a peer id.", "error");
    if (!text.trim()) return;
    const button = event.submitter || $("message-form").querySelector("button");
    button.disabled = true;
    try {
      await api("POST", "/messages", { to, text });
      $("msg-text").value = "";
      say(`Sent to ${to}.`);
      // The stream brings the sent message; polling needs asking.
      addMessages((await api("GET", "/messages")).messages);
    } catch (err) {
      report(err, `Message to ${to}`);
    } finally {
      button.disabled = false;
      $("msg-text").focus();
    }
  }

  // ---------------------------------------------------------------------------------------
  // Live data

  async function pollAll() {
    const [status, files, downloads, messages, peers] = await Promise.all([
      api("GET", "/status"),
      api("GET", "/files"),
      api("GET", "/downloads"),
      api("GET", "/messages"),
      api("GET", "/peers"),
    ]);
    state.status = status;
    state.files = files.files;
    // The whole list: jobs the node has forgotten leave the table.
    state.downloads = new Map(downloads.downloads.map((d) => [d.handle, d]));
    state.peers = peers;
    renderStatus();
    renderFiles();
    renderTransfers();
    renderPeers();
    addMessages(messages.messages);
    if (!$("search-input").value.trim()) await search();
  }

  const handlers = {
    snapshot(s) {
      state.status = s.status;
      state.files = s.files;
      // A snapshot replaces everything: jobs the node has forgotten leave the table.
      state.downloads = new Map(s.downloads.map((d) => [d.handle, d]));
      renderStatus();
      renderFiles();
      renderTransfers();
      addMessages(s.messages);
    },
    download: upsertDownload,
    message: (m) => addMessages([m]),
    file_shared: refreshFiles,
    file_unshared: refreshFiles,
    peers(data) {
      state.peers = data;
      renderPeers();
    },
    network_files: networkChanged,
  };

  // ---------------------------------------------------------------------------------------
  // Wiring

  function init() {
    window.addEventListener("hashchange", showView);
    showView();

    const out = $("out-dir");
    out.value = localStorage.getItem(OUT_KEY) || "";
    out.addEventListener("input", () => localStorage.setItem(OUT_KEY, out.value.trim()));

    $("search-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      clearTimeout(searchTimer);
      search();
    });
    // Typing searches after a pause; so does emptying the box (its clear button, a script).
    for (const name of ["input", "change"]) {
      $("search-input").addEventListener(name, () => {
        clearTimeout(searchTimer);
        searchTimer = setTimeout(search, SEARCH_DEBOUNCE_MS);
      });
    }

    $("share-form").addEventListener("submit", share);
    const input = $("upload-input");
    input.addEventListener("change", () => {
      uploadAll([...input.files]);
      input.value = "";
    });
    const drop = $("drop");
    for (const name of ["dragenter", "dragover"]) {
      drop.addEventListener(name, (ev) => {
        ev.preventDefault();
        drop.classList.add("over");
      });
    }
    for (const name of ["dragleave", "drop"]) {
      drop.addEventListener(name, () => drop.classList.remove("over"));
    }
    drop.addEventListener("drop", (ev) => {
      ev.preventDefault();
      if (ev.dataTransfer && ev.dataTransfer.files.length) uploadAll([...ev.dataTransfer.files]);
    });
    // A file dropped beside the zone must not navigate away from the page.
    window.addEventListener("dragover", (ev) => ev.preventDefault());
    window.addEventListener("drop", (ev) => ev.preventDefault());

    $("message-form").addEventListener("submit", sendMessage);

    // Ages tick between updates.
    setInterval(() => {
      for (const p of state.peers.peers) p.last_seen_ms += 1000;
      if (state.view === "peers") renderPeers();
    }, 1000);

    live(handlers, pollAll, setMode);
  }

  init();
})();
