// modelport dashboard: polls /dashboard/feed.json every second and renders it (uPlot for the charts).
// Strings from the server are only ever set as textContent (the token lives in sessionStorage: no innerHTML here).
"use strict";
(function () {
  const FEED = "/dashboard/feed.json";
  const KEY = "modelport.dashboard.token";
  const POLL_MS = 1000;
  const HIDDEN_POLL_MS = 5000;
  const CHARTS = [
    { id: "rps", title: "Requests / s", series: [["rps", "req/s", "#2563eb"]] },
    { id: "latency", title: "Latency (ms)", series: [["p50_ms", "p50", "#16a34a"], ["p99_ms", "p99", "#dc2626"]] },
    { id: "errors", title: "Error rate (%)", series: [["error_rate", "errors %", "#b91c1c"]], scale: 100 },
    { id: "batch", title: "Batch size (rows per batch)", series: [["batch_rows", "rows", "#9333ea"]] },
    { id: "queue", title: "Queue depth (requests)", series: [["queue_depth", "queued", "#ea580c"]], integer: true },
    { id: "cpu", title: "CPU / GPU use (%)", series: [["cpu_percent", "CPU", "#0891b2"], ["gpu_percent", "GPU", "#65a30d"]] },
    { id: "memory", title: "Resident memory (MB)", series: [["rss_mb", "RSS", "#475569"]] },
    { id: "cost", title: "Cost per 1k requests", series: [["cost_per_1k", "cost", "#854d0e"]] },
  ];
  const $ = (id) => document.getElementById(id);
  const charts = {};
  let group = new URLSearchParams(location.hash.slice(1)).get("group");
  let timer = null;
  let waitingForToken = false;
  let last = null;

  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }
  function num(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const d = digits === undefined ? (Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2) : digits;
    return Number(v).toFixed(d);
  }
  function short(v) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1e4) return Number((v / 1000).toFixed(1)) + "k";
    return String(a >= 1 ? Number(v.toFixed(2)) : Number(v.toPrecision(2)));
  }
  const pct = (v) => (v === null || v === undefined ? "–" : num(v * 100, 1) + "%");
  const lastOf = (xs) => { for (let i = (xs || []).length - 1; i >= 0; i--) if (xs[i] !== null) return xs[i]; return null; };
  const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour12: false });
  function ago(t, now) {
    const s = Math.max(0, Math.round(now - t));
    return s < 90 ? s + " s ago" : s < 5400 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago";
  }

  // -- auth ------------------------------------------------------------------------------------------------------
  function token() { return sessionStorage.getItem(KEY); }
  function askForToken(reason) {
    waitingForToken = true;
    $("login").hidden = false;
    $("token").focus();
    setStatus("signin", "sign in needed");
    message(reason);
  }
  $("login").addEventListener("submit", (e) => {
    e.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(KEY, value);
    $("token").value = "";
    $("login").hidden = true;
    waitingForToken = false;
    message(null);
    poll();
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    location.reload();
  });

  // -- polling ---------------------------------------------------------------------------------------------------
  function setStatus(state, text) { const s = $("status"); s.dataset.state = state; s.textContent = text; }
  function message(text) { const m = $("message"); m.hidden = !text; m.textContent = text || ""; }

  async function poll() {
    clearTimeout(timer);
    if (waitingForToken) return;
    const params = new URLSearchParams();
    if (group) params.set("group", group);
    const headers = { Accept: "application/json" };
    if (token()) headers.Authorization = "Bearer " + token();
    try {
      const r = await fetch(FEED + (params.toString() ? "?" + params : ""), { headers, cache: "no-store" });
      const body = await r.json().catch(() => ({}));
      if (r.status === 401) {
        const had = token();
        sessionStorage.removeItem(KEY);
        askForToken(had ? "The token was refused: " + (body.message || r.statusText) : null);
        return;
      }
      if (r.status === 403 && group) {
        message(body.message || "not allowed");
        group = null;
        history.replaceState(null, "", location.pathname);
      } else if (!r.ok) {
        setStatus("error", "error " + r.status);
        message(body.message || r.statusText);
      } else {
        if ($("status").dataset.state === "error") message(null);
        render(body);
        setStatus("live", "live · " + clock(body.now));
      }
    } catch (err) {
      setStatus("error", "server unreachable");
    }
    timer = setTimeout(poll, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
  }
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });
  $("group").addEventListener("change", (e) => {
    group = e.target.value;
    message(null);
    history.replaceState(null, "", "#group=" + encodeURIComponent(group));
    poll();
  });

  // -- rendering -------------------------------------------------------------------------------------------------
  function render(feed) {
    last = feed;
    if (!group || !feed.groups.includes(group)) group = feed.group;
    $("who").textContent = feed.auth ? "signed in as " + (feed.principal || "?") : "";
    $("logout").hidden = !feed.auth || !token();
    renderGroups(feed);
    renderTiles(feed);
    renderCharts(feed);
    renderDeployments(feed);
    renderEndpoints(feed);
    renderList("failures", feed.failures, (f) => [el("b", f.key), el("span", " " + f.reason)], "none");
    renderList("events", feed.events, (e) => [
      el("time", clock(e.at)), el("span", e.kind, { class: "badge " + e.kind }), el("b", " " + e.key), el("span", " " + describe(e)),
    ], "nothing yet", (e) => ({ "data-kind": e.kind }));
    if (!feed.metrics) message("Metrics are off on this server (observe: false): no charts.");
  }

  function renderGroups(feed) {
    const select = $("group");
    const wanted = feed.groups.join("\n");
    if (select.dataset.groups !== wanted) {
      select.replaceChildren(...feed.groups.map((g) => el("option", g.replace(":", ": "), { value: g })));
      select.dataset.groups = wanted;
    }
    if (feed.group) select.value = feed.group;
  }

  function renderTiles(feed) {
    const s = feed.series || {};
    const c = feed.current || {};
    $("now-rps").textContent = num(c.rps);
    $("now-p50").textContent = c.p50_ms === null || c.p50_ms === undefined ? "–" : num(c.p50_ms) + " ms";
    $("now-p99").textContent = c.p99_ms === null || c.p99_ms === undefined ? "–" : num(c.p99_ms) + " ms";
    $("now-errors").textContent = pct(c.error_rate);
    $("now-batch").textContent = num(lastOf(s.batch_rows));
    $("now-queue").textContent = num(lastOf(s.queue_depth), 0);
    $("now-cpu").textContent = s.cpu_percent && s.cpu_percent.length ? num(lastOf(s.cpu_percent), 1) + "%" : "–";
    const cost = lastOf(s.cost_per_1k);
    $("now-cost").textContent = feed.cost ? (cost === null ? "–" : short(cost) + " " + feed.currency) : "no price set";
  }

  function chart(spec) {
    let entry = charts[spec.id];
    if (entry) return entry;
    const box = el("section", null, { class: "chart card", id: "chart-" + spec.id, "data-points": "0" });
    box.append(el("h3", spec.title));
    const plot = el("div", null, { class: "plot" });
    box.append(plot);
    $("charts").append(box);
    const width = Math.max(200, plot.clientWidth || 300);
    const opts = {
      width, height: 150, legend: { show: spec.series.length > 1, live: false }, cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: (u, lo, hi) => [Math.min(0, lo || 0), hi > 0 ? hi * 1.1 : 1] } },
      axes: [{ size: 30, font: "11px system-ui" }, {
        size: 52, font: "11px system-ui",
        values: (u, splits) => splits.map((v) => (spec.integer && !Number.isInteger(v) ? "" : short(v))),
      }],
      series: [{}, ...spec.series.map(([, label, color]) => ({ label, stroke: color, width: 1.5, fill: color + "14", points: { show: false } }))],
    };
    const data = [[], ...spec.series.map(() => [])];
    entry = charts[spec.id] = { box, plot, u: new uPlot(opts, data, plot) };
    return entry;
  }

  function renderCharts(feed) {
    const s = feed.series;
    for (const spec of CHARTS) {
      const entry = chart(spec);
      if (!s) { entry.box.dataset.points = "0"; continue; }
      const data = [s.t, ...spec.series.map(([key]) => (s[key] || []).map((v) => (v === null || !spec.scale ? v : v * spec.scale)))];
      entry.u.setData(data);
      entry.box.dataset.points = String(s.t.length);
    }
  }

  function renderDeployments(feed) {
    const rows = feed.deployments.map((d) => {
      const swap = d.swapped_at ? "v" + (d.previous_version || "?") + " → v" + d.version + ", " + ago(d.swapped_at, feed.now) : "–";
      const state = d.pending_version ? d.state + " (loading v" + d.pending_version + ")" : d.state;
      const tr = el("tr", null, { "data-key": d.key, "data-model": d.name });
      tr.append(el("td", d.key, { class: "key" }), el("td", d.version, { class: "version" }), el("td", d.aliases.join(", "), { class: "aliases" }),
        el("td", d.runtime, { class: "runtime" }), el("td", d.provider, { class: "provider" }), el("td", state, { class: "state " + d.state.toLowerCase() }),
        el("td", swap, { class: "swap" }), el("td", num(d.rps), { class: "num rps" }), el("td", num(d.p99_ms), { class: "num" }),
        el("td", pct(d.error_rate), { class: "num" }), el("td", d.cost_per_1k === null ? "–" : short(d.cost_per_1k), { class: "num" }));
      if (d.last_error) tr.title = "last promotion failed: " + d.last_error;
      return tr;
    });
    if (!rows.length) rows.push(emptyRow(11, "no deployment you may view"));
    $("deployments").tBodies[0].replaceChildren(...rows);
  }

  function renderEndpoints(feed) {
    $("endpoints-card").hidden = !feed.endpoints.length;
    $("endpoints").tBodies[0].replaceChildren(...feed.endpoints.map((e) => {
      const served = e.served.map((s) => s.name + " = " + s.model + "/" + s.version + " (" + (s.state || "?") + ")").join("; ");
      const routes = e.routes.map((r) => r.served_model_name + " " + r.traffic_percentage + "%").join(", ");
      const tr = el("tr", null, { "data-endpoint": e.name });
      tr.append(el("td", e.name, { class: "key" }), el("td", e.ready + (e.config_update === "IN_PROGRESS" ? " (updating)" : "")),
        el("td", served), el("td", routes), el("td", num(e.rps), { class: "num rps" }), el("td", num(e.p99_ms), { class: "num" }),
        el("td", pct(e.error_rate), { class: "num" }));
      return tr;
    }));
  }

  function emptyRow(span, text) { const tr = el("tr"); tr.append(el("td", text, { colspan: String(span), class: "empty" })); return tr; }

  function renderList(id, items, parts, empty, attrs) {
    const lis = items.map((item) => { const li = el("li", null, attrs ? attrs(item) : {}); li.append(...parts(item)); return li; });
    if (!lis.length) lis.push(el("li", empty, { class: "empty" }));
    $(id).replaceChildren(...lis);
  }

  function describe(e) {
    const d = e.detail || {};
    const secs = d.load_s !== undefined ? " in " + num(d.load_s) + " s" : "";
    if (e.kind === "swapped") return "v" + d.from_version + " → v" + d.to_version + secs;
    if (e.kind === "loaded") return "v" + d.version + secs + (d.on_demand ? " (on demand)" : "");
    if (e.kind === "unloaded") return "v" + d.version + (d.reason ? ": " + d.reason : "");
    return d.reason || "";
  }

  new ResizeObserver(() => {
    for (const entry of Object.values(charts)) entry.u.setSize({ width: Math.max(200, entry.plot.clientWidth), height: 150 });
  }).observe($("charts"));
  for (const spec of CHARTS) chart(spec);
  window.modelportDashboard = { feed: () => last, charts };
  poll();
})();
