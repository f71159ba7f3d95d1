// Keel console: a small single-page app over the broker's /api endpoints. No dependencies.

const main = document.getElementById("main");
let refreshTimer = null;

// ---------------------------------------------------------------- helpers

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

class ApiFailure extends Error {
  constructor(status, error, message) {
    super(message);
    this.status = status;
    this.error = error;
  }
}

async function api(path, options = {}) {
  let response;
  try {
    response = await fetch("/api" + path, {
      ...options,
      headers: options.body ? { "content-type": "application/json" } : {},
    });
  } catch (e) {
    throw new ApiFailure(0, "UNREACHABLE", "Cannot reach the broker. Check that it is running, then reload the page.");
  }
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
  if (!response.ok) {
    throw new ApiFailure(response.status, body?.error ?? `HTTP_${response.status}`, body?.message ?? text ?? "Request failed.");
  }
  return body;
}

function errorBox(e) {
  return `<div class="error" role="alert"><b>${esc(e.error ?? "ERROR")}</b><br>${esc(e.message)}</div>`;
}

function number(n) {
  if (n === null || n === undefined) return "–";
  return Number(n).toLocaleString("en-US");
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = Number(n);
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function rate(n, unit) {
  if (!n) return `0 ${unit}/s`;
  return n >= 100 ? `${number(Math.round(n))} ${unit}/s` : `${n.toFixed(1)} ${unit}/s`;
}

function time(ms) {
  if (ms === null || ms === undefined || ms < 0) return "–";
  return new Date(ms).toISOString().replace("T", " ").replace("Z", " UTC");
}

function toast(text) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 3500);
}

function every(ms, fn) {
  clearInterval(refreshTimer);
  refreshTimer = setInterval(() => { if (!document.hidden) fn(); }, ms);
}

const COLORS = ["#2f6fed", "#e8710a", "#1b7f4b", "#a142f4", "#d93025", "#12a4af", "#8d6e63", "#f4b400"];

// A line chart in inline SVG: series = [{ name, points: [[t, v], ...] }].
function lineChart(series, { format = (v) => number(v), empty = "No data yet.", width = 480, id = "" } = {}) {
  const all = series.flatMap((s) => s.points);
  if (all.length < 2) {
    return `<div class="chart"><div class="empty small">${esc(empty)}</div></div>`;
  }
  const W = width, H = 170, L = 64, R = 10, T = 10, B = 22;
  const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
  const vmax = Math.max(1e-9, ...all.map((p) => p[1]));
  const x = (t) => L + (t1 === t0 ? 0 : ((t - t0) / (t1 - t0)) * (W - L - R));
  const y = (v) => T + (1 - v / vmax) * (H - T - B);
  const grid = [0, 0.5, 1].map((f) => {
    const yy = y(vmax * f);
    return `<line x1="${L}" x2="${W - R}" y1="${yy}" y2="${yy}" stroke="#e3e6eb"/>` +
      `<text x="${L - 6}" y="${yy + 4}" text-anchor="end" font-size="10" fill="#667085">${esc(format(vmax * f))}</text>`;
  }).join("");
  const paths = series.map((s, i) => {
    if (s.points.length === 0) return "";
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    return `<path d="${d}" fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="2" stroke-linejoin="round"/>`;
  }).join("");
  const labels = `<text x="${L}" y="${H - 6}" font-size="10" fill="#667085">${esc(new Date(t0).toLocaleTimeString())}</text>` +
    `<text x="${W - R}" y="${H - 6}" font-size="10" fill="#667085" text-anchor="end">${esc(new Date(t1).toLocaleTimeString())}</text>`;
  const legend = series.length > 1 || series[0]?.name
    ? `<div class="legend">${series.slice(0, 12).map((s, i) => `<span><span class="swatch" style="background:${COLORS[i % COLORS.length]}"></span>${esc(s.name)}</span>`).join("")}</div>`
    : "";
  return `<div class="chart"><svg${id ? ` id="${esc(id)}"` : ""} viewBox="0 0 ${W} ${H}" role="img">${grid}${paths}${labels}</svg>${legend}</div>`;
}

function throughputCharts(points, sampleMs) {
  const empty = `Throughput appears after two samples (one every ${sampleMs / 1000} s).`;
  return `<div class="charts">
    <div><h2>Records per second</h2>${lineChart([{ name: "", points: points.map((p) => [p.at_ms, p.records_per_s]) }], { format: (v) => rate(v, "rec"), empty })}</div>
    <div><h2>Bytes per second</h2>${lineChart([{ name: "", points: points.map((p) => [p.at_ms, p.bytes_per_s]) }], { format: (v) => bytes(v) + "/s", empty })}</div>
  </div>`;
}

// ---------------------------------------------------------------- pages

async function overviewPage() {
  main.innerHTML = `<h1>Overview</h1>
    <p class="lead">Keel stores streams of records in <b>topics</b>. Each topic is split into <b>partitions</b>, ordered logs where
    every record gets an <b>offset</b>. Producers append records; consumers read them and remember their position as
    committed offsets in a <b>consumer group</b>.</p>
    <div id="overview"><p class="muted">Loading&hellip;</p></div>`;
  const render = async () => {
    const box = document.getElementById("overview");
    if (!box) return;
    try {
      const o = await api("/overview");
      document.getElementById("cluster-line").textContent = `Cluster ${o.cluster_id}, node ${o.node_id}`;
      box.innerHTML = `<div class="cards">
          <div class="card"><div class="label">Nodes</div><div class="value">${number(o.brokers.length)}</div><div class="hint">brokers in the cluster${o.brokers.some((b) => b.fenced) ? `, ${number(o.brokers.filter((b) => b.fenced).length)} fenced` : ""}</div></div>
          <div class="card"><div class="label">Topics</div><div class="value">${number(o.topics)}</div><div class="hint">plus ${number(o.internal_topics)} internal</div></div>
          <div class="card"><div class="label">Partitions</div><div class="value">${number(o.partitions)}</div><div class="hint">in your topics</div></div>
          <div class="card"><div class="label">Records</div><div class="value">${number(o.records)}</div><div class="hint">${esc(bytes(o.bytes))} on disk</div></div>
          <div class="card"><div class="label">Consumer groups</div><div class="value">${number(o.groups)}</div><div class="hint"><a href="#/groups">see lag</a></div></div>
        </div>
        ${throughputCharts(o.throughput, o.sample_every_ms)}
        <h2>Nodes</h2>
        <p class="muted" id="quorum-line">${o.quorum.leader === null
          ? '<span class="badge warn">no metadata leader</span> metadata changes wait until a majority of controllers is up'
          : `Metadata quorum: leader node ${o.quorum.leader}, epoch ${number(o.quorum.epoch)}, ${number(o.quorum.voters.length)} voter(s), ${number(o.quorum.high_watermark)} entries committed`}</p>
        <table><thead><tr><th>Node id</th><th>Address</th><th>Rack</th><th>State</th><th>Controller</th></tr></thead><tbody>
        ${o.brokers.map((b) => `<tr><td>${b.node_id}${b.node_id === o.node_id ? ' <span class="badge info">this node</span>' : ""}</td><td class="mono">${esc(b.host)}:${b.port}</td><td>${esc(b.rack ?? "–")}</td><td>${b.fenced ? '<span class="badge warn">fenced</span>' : "unfenced"}</td><td>${b.node_id === o.quorum.leader ? "leader" : o.quorum.voters.includes(b.node_id) ? "voter" : "–"}</td></tr>`).join("")}
        </tbody></table>
        ${o.topics === 0 ? `<div class="empty" style="margin-top:16px"><b>No topics yet</b>Create one on the <a href="#/topics">Topics</a> page, or let a producer create it on first write.</div>` : ""}`;
    } catch (e) {
      box.innerHTML = errorBox(e);
    }
  };
  await render();
  every(5000, render);
}

async function topicsPage() {
  main.innerHTML = `<div class="header-row"><div class="grow"><h1>Topics</h1>
    <p class="lead">A topic is a named stream of records. Its partitions let several consumers read in parallel; the
    replication factor is how many copies of each partition the cluster keeps.</p></div>
    <button id="new-topic-btn">Create topic</button></div>
    <div id="create-panel" hidden></div>
    <div class="toolbar"><input id="topic-search" class="grow" type="search" placeholder="Search topics by name" aria-label="Search topics">
    <label style="flex-direction:row;align-items:center;font-weight:400"><input type="checkbox" id="show-internal"> show internal topics</label></div>
    <div id="topics"><p class="muted">Loading&hellip;</p></div>`;
  const search = document.getElementById("topic-search");
  const internal = document.getElementById("show-internal");
  let topics = [];
  let loadError = null;
  const draw = () => {
    const box = document.getElementById("topics");
    if (!box) return;
    if (loadError) { box.innerHTML = errorBox(loadError); return; }
    const q = search.value.trim().toLowerCase();
    const shown = topics.filter((t) => (internal.checked || !t.internal) && t.name.toLowerCase().includes(q));
    if (topics.filter((t) => !t.internal).length === 0 && !internal.checked) {
      box.innerHTML = `<div class="empty"><b>No topics yet</b>Click <i>Create topic</i> above, or produce to a new topic with any Kafka client
        (Keel creates it on first write when <code>auto.create.topics.enable</code> is true).</div>`;
      return;
    }
    if (shown.length === 0) {
      box.innerHTML = `<div class="empty"><b>No topic matches “${esc(q)}”</b>Clear the search to see every topic.</div>`;
      return;
    }
    box.innerHTML = `<table><thead><tr><th>Name</th><th class="num">Partitions</th><th class="num">Replication</th>
      <th class="num">Records</th><th class="num">Size</th><th class="num">Throughput</th></tr></thead><tbody>
      ${shown.map((t) => `<tr class="clickable" data-topic="${esc(t.name)}"><td><a href="#/topic/${encodeURIComponent(t.name)}">${esc(t.name)}</a>
        ${t.internal ? ' <span class="badge">internal</span>' : ""}</td>
        <td class="num">${t.partitions}</td><td class="num">${t.replication_factor}</td><td class="num">${number(t.records)}</td>
        <td class="num">${bytes(t.bytes)}</td><td class="num">${rate(t.records_per_s, "rec")}<br><span class="muted small">${bytes(t.bytes_per_s)}/s</span></td></tr>`).join("")}
      </tbody></table>`;
    box.querySelectorAll("tr[data-topic]").forEach((row) => row.addEventListener("click", () => {
      location.hash = `#/topic/${encodeURIComponent(row.dataset.topic)}`;
    }));
  };
  const load = async () => {
    try { topics = (await api("/topics")).topics; loadError = null; } catch (e) { loadError = e; }
    draw();
  };
  search.addEventListener("input", draw);
  internal.addEventListener("change", draw);
  document.getElementById("new-topic-btn").addEventListener("click", () => showCreateForm(load));
  await load();
  every(5000, load);
}

function showCreateForm(reload) {
  const panel = document.getElementById("create-panel");
  panel.hidden = false;
  panel.innerHTML = `<form class="panel" id="create-form"><h2 style="margin-top:0">New topic</h2>
    <div class="form-grid">
      <label>Name<input id="topic-name" required maxlength="249" placeholder="orders" autocomplete="off">
        <span class="help">Letters, digits, <code>.</code> <code>_</code> <code>-</code></span></label>
      <label>Partitions<input id="topic-partitions" type="number" min="1" value="1">
        <span class="help">More partitions, more parallel consumers</span></label>
      <label>Replication factor<input id="topic-rf" type="number" min="1" value="1">
        <span class="help">Copies of each partition (at most the number of nodes)</span></label>
    </div>
    <label style="margin-top:14px">Configs (optional)<textarea id="topic-configs" placeholder="retention.ms=604800000&#10;cleanup.policy=delete"></textarea>
      <span class="help">One <code>name=value</code> per line. Leave empty for the defaults.</span></label>
    <div id="create-error"></div>
    <div class="form-actions"><button type="submit" id="create-topic">Create topic</button>
      <button type="button" class="secondary" id="create-cancel">Cancel</button></div></form>`;
  document.getElementById("topic-name").focus();
  document.getElementById("create-cancel").addEventListener("click", () => { panel.hidden = true; panel.innerHTML = ""; });
  document.getElementById("create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const errorEl = document.getElementById("create-error");
    errorEl.innerHTML = "";
    const configs = {};
    for (const line of document.getElementById("topic-configs").value.split("\n")) {
      const trimmed = line.trim();
      if (!trimmed) continue;
      const at = trimmed.indexOf("=");
      if (at <= 0) {
        errorEl.innerHTML = errorBox({ error: "INVALID_CONFIG", message: `“${trimmed}” is not name=value. Write one config per line, like retention.ms=86400000.` });
        return;
      }
      configs[trimmed.slice(0, at).trim()] = trimmed.slice(at + 1).trim();
    }
    const body = {
      name: document.getElementById("topic-name").value.trim(),
      partitions: Number(document.getElementById("topic-partitions").value),
      replication_factor: Number(document.getElementById("topic-rf").value),
      configs,
    };
    const button = document.getElementById("create-topic");
    button.disabled = true;
    try {
      await api("/topics", { method: "POST", body: JSON.stringify(body) });
      toast(`Topic ${body.name} created`);
      panel.hidden = true;
      panel.innerHTML = "";
      await reload();
    } catch (e) {
      errorEl.innerHTML = errorBox(e);
      button.disabled = false;
    }
  });
}

async function topicPage(name, tab) {
  tab = tab || "messages";
  main.innerHTML = `<div class="crumbs"><a href="#/topics">Topics</a> / </div>
    <div class="header-row"><div class="grow"><h1 id="topic-title">${esc(name)}</h1><p class="muted" id="topic-summary">Loading&hellip;</p></div>
    <button class="danger" id="delete-topic">Delete topic</button></div>
    <div id="topic-error"></div>
    <div class="tabs" role="tablist">
      <button data-tab="messages">Messages</button><button data-tab="partitions">Partitions</button><button data-tab="configs">Configs</button>
    </div>
    <div id="tab"></div>`;
  document.getElementById("delete-topic").addEventListener("click", () => confirmDelete(name));
  let topic = null;
  const loadTopic = async () => {
    try {
      topic = await api(`/topics/${encodeURIComponent(name)}`);
      document.getElementById("topic-summary").innerHTML =
        `${topic.partitions.length} partition${topic.partitions.length === 1 ? "" : "s"}, replication factor ${topic.replication_factor},
         ${number(topic.records)} records, ${bytes(topic.bytes)} on disk${topic.internal ? ' <span class="badge">internal</span>' : ""}`;
      return topic;
    } catch (e) {
      document.getElementById("topic-summary").textContent = "";
      document.getElementById("topic-error").innerHTML = errorBox(e);
      document.getElementById("tab").innerHTML = "";
      return null;
    }
  };
  if (!(await loadTopic())) return;
  const show = (which) => {
    clearInterval(refreshTimer);
    document.querySelectorAll(".tabs button").forEach((b) => b.classList.toggle("active", b.dataset.tab === which));
    history.replaceState(null, "", `#/topic/${encodeURIComponent(name)}/${which}`);
    if (which === "partitions") partitionsTab(topic, loadTopic);
    else if (which === "configs") configsTab(topic, loadTopic);
    else messagesTab(topic);
  };
  document.querySelectorAll(".tabs button").forEach((b) => b.addEventListener("click", () => show(b.dataset.tab)));
  show(tab);
}

function partitionsTab(topic, reload) {
  const box = document.getElementById("tab");
  const draw = (t) => {
    box.innerHTML = `<p class="lead">Each partition is a log. The <b>log start offset</b> is the oldest record still kept, the
      <b>high watermark</b> is where the next record will go (consumers read up to it), and the <b>last stable offset</b> is how far
      <code>read_committed</code> consumers may read while transactions are open.</p>
      <table id="partitions-table"><thead><tr><th>Partition</th><th>Leader</th><th>Replicas</th><th>In sync</th>
      <th class="num">Log start</th><th class="num">High watermark</th><th class="num">Last stable</th><th class="num">Records</th><th class="num">Size</th></tr></thead><tbody>
      ${t.partitions.map((p) => `<tr data-partition="${p.partition}"><td>${p.partition}</td><td>${p.leader}</td><td>${esc(p.replicas.join(", "))}</td><td>${esc(p.isr.join(", "))}</td>
        <td class="num">${number(p.log_start_offset)}</td><td class="num">${number(p.high_watermark)}</td><td class="num">${number(p.last_stable_offset)}</td>
        <td class="num">${p.high_watermark === null ? "–" : number(p.high_watermark - p.log_start_offset)}</td><td class="num">${bytes(p.bytes)}</td></tr>`).join("")}
      </tbody></table>
      ${throughputCharts(t.throughput, t.sample_every_ms)}`;
  };
  draw(topic);
  every(5000, async () => { const t = await reload(); if (t && document.getElementById("partitions-table")) draw(t); });
}

function configsTab(topic, reload) {
  const box = document.getElementById("tab");
  const draw = (t) => {
    box.innerHTML = `<p class="lead">Configs change how the topic keeps and serves its records. A value set on the topic overrides
      the broker's default; <i>Reset</i> removes the override. Changes apply at once.</p>
      <div class="toolbar"><input id="config-search" class="grow" type="search" placeholder="Filter configs" aria-label="Filter configs">
      <label style="flex-direction:row;align-items:center;font-weight:400"><input type="checkbox" id="only-overrides"> only values set on this topic</label></div>
      <table><thead><tr><th style="width:32%">Config</th><th>Value</th><th style="width:170px"></th></tr></thead><tbody id="configs-body">
      ${t.configs.map((c) => `<tr data-config="${esc(c.name)}" data-source="${esc(c.source)}">
        <td><span class="mono">${esc(c.name)}</span><div class="config-doc">${esc(c.doc ?? "")}</div></td>
        <td><input class="config-value" value="${esc(c.value ?? "")}" ${c.read_only || c.sensitive ? "disabled" : ""} aria-label="${esc(c.name)}">
          <div class="small muted">${c.source === "topic" ? '<span class="badge info">set on topic</span>' : `from ${esc(c.source)}`}</div>
          <div class="config-error"></div></td>
        <td><button class="config-save">Save</button> ${c.source === "topic" ? '<button class="secondary config-reset">Reset</button>' : ""}</td></tr>`).join("")}
      </tbody></table>`;
    const filter = () => {
      const q = document.getElementById("config-search").value.trim().toLowerCase();
      const only = document.getElementById("only-overrides").checked;
      box.querySelectorAll("tr[data-config]").forEach((row) => {
        row.hidden = !row.dataset.config.includes(q) || (only && row.dataset.source !== "topic");
      });
    };
    document.getElementById("config-search").addEventListener("input", filter);
    document.getElementById("only-overrides").addEventListener("change", filter);
    box.querySelectorAll("tr[data-config]").forEach((row) => {
      const change = async (body, done) => {
        const errorEl = row.querySelector(".config-error");
        errorEl.textContent = "";
        try {
          await api(`/topics/${encodeURIComponent(t.name)}/configs`, { method: "POST", body: JSON.stringify(body) });
          toast(done);
          const fresh = await reload();
          if (fresh) draw(fresh);
        } catch (e) {
          errorEl.textContent = `${e.error}: ${e.message}`;
        }
      };
      row.querySelector(".config-save").addEventListener("click", () => {
        const value = row.querySelector(".config-value").value.trim();
        change({ set: { [row.dataset.config]: value } }, `${row.dataset.config} set to ${value}`);
      });
      row.querySelector(".config-reset")?.addEventListener("click", () => {
        change({ delete: [row.dataset.config] }, `${row.dataset.config} reset to its default`);
      });
    });
  };
  draw(topic);
}

function confirmDelete(name) {
  const dialog = document.createElement("dialog");
  dialog.innerHTML = `<h2 style="margin-top:0">Delete topic ${esc(name)}?</h2>
    <p>Every record in it is deleted and cannot be recovered. Consumers of the topic will get errors.</p>
    <label>Type the topic name to confirm<input id="confirm-name" autocomplete="off"></label>
    <div id="delete-error"></div>
    <div class="form-actions"><button class="danger" id="confirm-delete" disabled>Delete</button><button class="secondary" id="cancel-delete">Cancel</button></div>`;
  document.body.appendChild(dialog);
  dialog.showModal();
  const input = dialog.querySelector("#confirm-name");
  const button = dialog.querySelector("#confirm-delete");
  input.addEventListener("input", () => { button.disabled = input.value !== name; });
  dialog.querySelector("#cancel-delete").addEventListener("click", () => { dialog.close(); dialog.remove(); });
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await api(`/topics/${encodeURIComponent(name)}`, { method: "DELETE" });
      dialog.close();
      dialog.remove();
      toast(`Topic ${name} deleted`);
      location.hash = "#/topics";
    } catch (e) {
      dialog.querySelector("#delete-error").innerHTML = errorBox(e);
      button.disabled = false;
    }
  });
}

function prettyValue(v) {
  if (v === null) return `<pre class="muted">null</pre>`;
  if (v.encoding === "hex") {
    return `<pre><span class="badge warn">binary, shown as hex</span> ${esc(v.text)}${v.truncated ? "…" : ""}</pre><span class="small muted">${number(v.size)} bytes</span>`;
  }
  let text = v.text;
  let json = false;
  const first = text.trimStart()[0];
  if (!v.truncated && (first === "{" || first === "[")) {
    try { text = JSON.stringify(JSON.parse(text), null, 2); json = true; } catch (e) { json = false; }
  }
  return `<pre class="${json ? "json" : ""}">${esc(text)}${v.truncated ? "…" : ""}</pre>` +
    (json ? '<span class="badge info">JSON</span> ' : "") +
    (v.truncated ? `<span class="small muted">first ${number(v.text.length)} of ${number(v.size)} bytes shown</span>` : "");
}

function messagesTab(topic) {
  const box = document.getElementById("tab");
  box.innerHTML = `<p class="lead">Browse the records stored in this topic, as a consumer would read them. Start from the newest
    records (shown newest first), the oldest, an offset or a point in time, and filter by text found in keys,
    values or headers.</p>
    <form class="toolbar" id="msg-form">
      <label>Partition<select id="msg-partition"><option value="">All</option>
        ${topic.partitions.map((p) => `<option value="${p.partition}">${p.partition}</option>`).join("")}</select></label>
      <label>Start from<select id="msg-from"><option value="end">Newest records</option><option value="beginning">Oldest records</option>
        <option value="offset">An offset</option><option value="timestamp">A date and time</option></select></label>
      <label id="msg-offset-label" hidden>Offset<input id="msg-offset" type="number" min="0" value="0" style="width:120px"></label>
      <label id="msg-timestamp-label" hidden>Time (UTC)<input id="msg-timestamp" type="datetime-local" step="1"></label>
      <label>Max records<input id="msg-limit" type="number" min="1" max="500" value="50" style="width:90px"></label>
      <label class="grow">Text filter<input id="msg-filter" type="search" placeholder="e.g. an order id"></label>
      <button type="submit" id="msg-load" style="align-self:flex-end">Show records</button>
    </form>
    <div id="messages"></div>`;
  const from = document.getElementById("msg-from");
  from.addEventListener("change", () => {
    document.getElementById("msg-offset-label").hidden = from.value !== "offset";
    document.getElementById("msg-timestamp-label").hidden = from.value !== "timestamp";
  });
  const load = async (event) => {
    event?.preventDefault();
    const out = document.getElementById("messages");
    const params = new URLSearchParams();
    const partition = document.getElementById("msg-partition").value;
    if (partition !== "") params.set("partition", partition);
    params.set("from", from.value);
    if (from.value === "offset") params.set("offset", document.getElementById("msg-offset").value);
    if (from.value === "timestamp") {
      const value = document.getElementById("msg-timestamp").value;
      if (!value) {
        out.innerHTML = errorBox({ error: "INVALID_REQUEST", message: "Pick a date and time to start from." });
        return;
      }
      params.set("timestamp", String(Date.parse(value + "Z")));
    }
    params.set("limit", document.getElementById("msg-limit").value);
    const filter = document.getElementById("msg-filter").value.trim();
    if (filter) params.set("filter", filter);
    out.innerHTML = `<p class="muted">Loading&hellip;</p>`;
    try {
      const r = await api(`/topics/${encodeURIComponent(topic.name)}/messages?${params}`);
      const remaining = r.partitions.filter((p) => p.next_offset < p.high_watermark);
      const summary = `<p class="small muted" id="msg-summary">${r.records.length} record${r.records.length === 1 ? "" : "s"} shown
        ${filter ? `matching “${esc(filter)}”` : ""} · read ${r.partitions.map((p) => `partition ${p.partition}: offsets ${number(p.start_offset)}–${number(p.next_offset - 1)} of ${number(p.high_watermark)}`).join("; ")}</p>`;
      if (r.records.length === 0) {
        const empty = topic.records === 0
          ? `<b>This topic is empty</b>Produce records with any Kafka client, for example <code>keel produce ${esc(topic.name)}</code>, then click <i>Show records</i> again.`
          : filter
            ? `<b>No record matches “${esc(filter)}”</b>The filter looked at the records read from the chosen start. Try another start, a larger max, or a different text.`
            : `<b>No records from this start</b>Choose <i>Oldest records</i> to read from the beginning.`;
        out.innerHTML = summary + `<div class="empty">${empty}</div>`;
        return;
      }
      // Newest first when reading from the end; in offset order otherwise.
      const shown = from.value === "end" ? [...r.records].reverse() : r.records;
      out.innerHTML = summary + `<div class="records">${shown.map((m) => `<div class="record" data-offset="${m.offset}" data-partition="${m.partition}">
        <div class="meta"><span>partition <b>${m.partition}</b></span><span>offset <b>${m.offset}</b></span>
          <span title="${esc(m.timestamp_type)}">${esc(time(m.timestamp))}</span></div>
        <div class="field"><span>key</span><div class="rec-key">${prettyValue(m.key)}</div></div>
        <div class="field"><span>value</span><div class="rec-value">${prettyValue(m.value)}</div></div>
        ${m.headers.length ? `<div class="field"><span>headers</span><div class="rec-headers headers">${m.headers.map((h) => `<span class="header">${esc(h.key)}=${h.value === null ? "null" : esc(h.value.text)}</span>`).join("")}</div></div>` : ""}
      </div>`).join("")}</div>` +
        (remaining.length && from.value !== "end" ? `<p class="small muted">More records follow. Start from offset ${number(remaining[0].next_offset)}${remaining.length > 1 ? " (per partition, see above)" : ""} to continue.</p>` : "");
    } catch (e) {
      out.innerHTML = errorBox(e);
    }
  };
  document.getElementById("msg-form").addEventListener("submit", load);
  load();
}

async function groupsPage() {
  main.innerHTML = `<h1>Consumer groups</h1>
    <p class="lead">Consumers that share a <b>group id</b> split a topic's partitions between them and commit how far they have read.
    <b>Lag</b> is how many records they still have to read: the high watermark minus the committed offset.</p>
    <div id="groups"><p class="muted">Loading&hellip;</p></div>`;
  const render = async () => {
    const box = document.getElementById("groups");
    if (!box) return;
    try {
      const { groups } = await api("/groups");
      if (groups.length === 0) {
        box.innerHTML = `<div class="empty"><b>No consumer groups yet</b>A group appears when a consumer with a <code>group.id</code>
          joins or commits offsets, for example <code>keel consume my-topic --group my-app</code>.</div>`;
        return;
      }
      box.innerHTML = `<table><thead><tr><th>Group</th><th>State</th><th>Type</th><th class="num">Members</th><th>Topics</th><th class="num">Total lag</th></tr></thead><tbody>
        ${groups.map((g) => `<tr class="clickable" data-group="${esc(g.group_id)}"><td><a href="#/group/${encodeURIComponent(g.group_id)}">${esc(g.group_id)}</a></td>
        <td>${stateBadge(g.state)}</td><td>${esc(g.type)}</td><td class="num">${g.members}</td><td>${esc(g.topics.join(", ") || "–")}</td><td class="num">${number(g.lag)}</td></tr>`).join("")}
        </tbody></table>`;
      box.querySelectorAll("tr[data-group]").forEach((row) => row.addEventListener("click", () => {
        location.hash = `#/group/${encodeURIComponent(row.dataset.group)}`;
      }));
    } catch (e) {
      box.innerHTML = errorBox(e);
    }
  };
  await render();
  every(5000, render);
}

function stateBadge(state) {
  const kind = { Stable: "ok", Empty: "", Dead: "warn", PreparingRebalance: "warn", CompletingRebalance: "warn", Reconciling: "warn", Assigning: "warn" }[state] ?? "";
  return `<span class="badge ${kind}">${esc(state)}</span>`;
}

async function groupPage(id) {
  main.innerHTML = `<div class="crumbs"><a href="#/groups">Consumer groups</a> / </div><h1>${esc(id)}</h1>
    <div id="group"><p class="muted">Loading&hellip;</p></div>`;
  const render = async () => {
    const box = document.getElementById("group");
    if (!box) return;
    try {
      const g = await api(`/groups/${encodeURIComponent(id)}`);
      const totalLag = g.offsets.reduce((sum, o) => sum + o.lag, 0);
      const keys = [...new Set(g.lag_history.flatMap((s) => Object.keys(s.partitions)))].slice(0, 8);
      const series = keys.map((k) => ({ name: k, points: g.lag_history.filter((s) => k in s.partitions).map((s) => [s.at_ms, s.partitions[k]]) }));
      box.innerHTML = `<p class="muted">${stateBadge(g.state)} ${esc(g.protocol)} · ${g.members.length} member${g.members.length === 1 ? "" : "s"} · total lag <b id="total-lag">${number(totalLag)}</b></p>
        <h2>Lag per partition</h2>
        ${g.offsets.length === 0 ? `<div class="empty"><b>No committed offsets</b>The group has not committed a position yet, so its lag is unknown.</div>` :
        `<table id="offsets-table"><thead><tr><th>Topic</th><th>Partition</th><th class="num">Committed offset</th><th class="num">High watermark</th><th class="num">Lag</th></tr></thead><tbody>
        ${g.offsets.map((o) => `<tr data-partition="${esc(o.topic)}-${o.partition}"><td><a href="#/topic/${encodeURIComponent(o.topic)}">${esc(o.topic)}</a></td><td>${o.partition}</td>
          <td class="num">${number(o.committed_offset)}</td><td class="num">${number(o.high_watermark)}</td><td class="num lag">${number(o.lag)}</td></tr>`).join("")}
        </tbody></table>`}
        <h2>Lag over time</h2>
        ${lineChart(series, { width: 980, id: "lag-chart", empty: `The chart fills in as lag is sampled (every ${g.sample_every_ms / 1000} s, last 10 minutes).` })}
        <h2>Members</h2>
        ${g.members.length === 0 ? `<div class="empty"><b>No active members</b>No consumer of this group is running now. Its committed offsets are kept.</div>` :
        `<table id="members-table"><thead><tr><th>Client id</th><th>Host</th><th>Member id</th><th>Assigned partitions</th></tr></thead><tbody>
        ${g.members.map((m) => `<tr><td>${esc(m.client_id)}</td><td class="mono">${esc(m.host)}</td><td class="mono small">${esc(m.member_id)}</td>
          <td>${esc(m.assignment.map((a) => `${a.topic}: ${a.partitions.join(", ")}`).join("; ") || "–")}</td></tr>`).join("")}
        </tbody></table>`}`;
    } catch (e) {
      box.innerHTML = errorBox(e) + (e.error === "GROUP_ID_NOT_FOUND" ? `<p><a href="#/groups">Back to the groups</a></p>` : "");
    }
  };
  await render();
  every(5000, render);
}

// ---------------------------------------------------------------- routing

function route() {
  clearInterval(refreshTimer);
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const page = parts[0] || "overview";
  document.querySelectorAll("[data-nav]").forEach((a) => {
    const nav = a.dataset.nav;
    a.classList.toggle("active", nav === page || (nav === "topics" && page === "topic") || (nav === "groups" && page === "group"));
  });
  if (page === "topics") return topicsPage();
  if (page === "topic" && parts[1]) return topicPage(parts[1], parts[2]);
  if (page === "groups") return groupsPage();
  if (page === "group" && parts[1]) return groupPage(parts.slice(1).join("/"));
  return overviewPage();
}

window.addEventListener("hashchange", route);
route();
