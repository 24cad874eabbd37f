// The index server's status page: uptime, peers with node id and heartbeat age, files.
// Live from the event stream (snapshot, status, peers, files), or polling without it.
"use strict";

(() => {
  const { h, setText, setAttr, syncRows, cell, idSpan, bytes, duration, ago, api, live } = P2P;
  const $ = (id) => document.getElementById(id);

  // When each value arrived, so uptime and heartbeat ages tick between updates.
  const state = { status: null, statusAt: 0, peers: [], peersAt: 0, files: [], filesTotal: 0 };

  function renderStatus() {
    const s = state.status;
    if (!s) return;
    const id = $("node-id");
    setText(id, P2P.shortId(s.node_id, 16));
    setAttr(id, "title", `The index's node id: ${s.node_id}`);
    setText($("node-addr"), `listening on ${s.listen_addr}${s.mdns_name ? ` · mDNS ${s.mdns_name}` : ""} · v${s.version}`);
    setText($("stat-uptime"), duration((s.uptime_ms + Date.now() - state.statusAt) / 1000));
    setText($("stat-peers"), s.peers);
    setText($("stat-files"), s.files);
    setText($("stat-stored"), bytes(s.stored_bytes));
    setText($("stat-stored-of"), `of ${bytes(s.max_stored_bytes)} of manifests`);
    const bar = $("stat-stored-bar");
    bar.max = s.max_stored_bytes || 1;
    bar.value = s.stored_bytes;
  }

  function renderPeers() {
    const since = Date.now() - state.peersAt;
    syncRows(
      $("peer-rows"),
      state.peers,
      (p) => p.node_id + "|" + p.peer_id,
      (p) =>
        h(
          "tr",
          { "data-node-id": p.node_id, "data-peer-id": p.peer_id },
          cell("Node id", idSpan(p.node_id, 16, true)),
          cell("Peer id", idSpan(p.peer_id, 12)),
          cell("Address", h("span", { class: "mono", text: p.addr })),
          cell("Files"),
          cell("Last heartbeat"),
        ),
      (row, p) => {
        row.cells[3].className = "num";
        setText(row.cells[2].firstChild, p.addr);
        setText(row.cells[3], p.files);
        setText(row.cells[4], ago(p.last_seen_ms + since));
      },
    );
    $("peers-empty").hidden = state.peers.length > 0;
    setText($("count-peers"), state.peers.length || "");
  }

  function renderFiles() {
    syncRows(
      $("file-rows"),
      state.files,
      (f) => f.file_id,
      (f) =>
        h(
          "tr",
          { "data-file-id": f.file_id },
          cell("Name", h("div", { class: "name", text: f.name }), idSpan(f.file_id)),
          cell("Size"),
          cell("Hosts"),
        ),
      (row, f) => {
        row.cells[1].className = "num";
        row.cells[2].className = "num";
        setText(row.cells[0].firstChild, f.name);
        setText(row.cells[1], bytes(f.size));
        setText(row.cells[2], f.hosts);
      },
    );
    $("files-empty").hidden = state.files.length > 0;
    const total = state.filesTotal;
    const shown = state.files.length < total ? ` (showing ${state.files.length})` : "";
    setText($("files-summary"), `${total} file${total === 1 ? "" : "s"} indexed${shown}`);
    setText($("count-files"), total || "");
  }

  const handlers = {
    snapshot(s) {
      handlers.status(s.status);
      handlers.peers(s.peers);
      handlers.files(s.files);
    },
    status(s) {
      state.status = s;
      state.statusAt = Date.now();
      renderStatus();
    },
    peers(data) {
      state.peers = data.peers;
      state.peersAt = Date.now();
      renderPeers();
    },
    files(data) {
      state.files = data.files;
      state.filesTotal = data.total;
      renderFiles();
    },
  };

  async function pollAll() {
    const [status, peers, files] = await Promise.all([api("GET", "/status"), api("GET", "/peers"), api("GET", "/files")]);
    handlers.status(status);
    handlers.peers(peers);
    handlers.files(files);
  }

  function setMode(mode) {
    const dot = $("live-dot");
    setAttr(dot, "data-mode", mode);
    setAttr(dot, "title", { live: "Live", polling: "Updating every 2 s", offline: "Not connected" }[mode]);
  }

  setInterval(() => {
    renderStatus();
    renderPeers();
  }, 1000);
  live(handlers, pollAll, setMode);
})();
