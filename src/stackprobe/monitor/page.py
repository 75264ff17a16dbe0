"""The monitor's one page: inline CSS and JS, no external assets, works offline.

It polls /api/status every second and redraws tiles (state, latency sparkline, last error,
root cause), the dependency graph (impacted services highlighted), the synthetic flow (each
hop's status and latency, the last failing hop, recent flows), the coverage matrix and the
per-check outcomes of the last full run. A `?token=` in its URL is sent as a Bearer token.
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>stackprobe · live health</title>
<style>
:root { --up:#1a7f37; --degraded:#b08800; --down:#cf222e; --unknown:#6e7781; --unstable:#8250df;
        --bg:#f6f8fa; --fg:#1f2328; --card:#fff; --line:#d0d7de; }
* { box-sizing: border-box; }
body { margin:0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--fg); }
header { display:flex; gap:16px; align-items:baseline; padding:12px 20px; background:var(--card); border-bottom:1px solid var(--line); }
header h1 { font-size:18px; margin:0; }
#overall { font-weight:600; padding:2px 8px; border-radius:10px; color:#fff; }
main { padding:16px 20px; display:grid; gap:16px; }
section h2 { font-size:15px; margin:0 0 8px; }
#tiles { display:grid; grid-template-columns:repeat(auto-fill, minmax(250px, 1fr)); gap:12px; }
.tile { background:var(--card); border:1px solid var(--line); border-left:6px solid var(--unknown); border-radius:6px; padding:10px 12px; }
.tile[data-state=up] { border-left-color:var(--up); }
.tile[data-state=degraded] { border-left-color:var(--degraded); }
.tile[data-state=down] { border-left-color:var(--down); background:#fff5f5; }
.tile[data-state=unstable] { border-left-color:var(--unstable); }
.tile .name { font-weight:600; font-size:15px; }
.tile .kind { color:var(--unknown); }
.badge { display:inline-block; padding:0 8px; border-radius:10px; color:#fff; font-size:12px; font-weight:600; text-transform:uppercase; }
.b-up { background:var(--up); } .b-degraded { background:var(--degraded); } .b-down { background:var(--down); }
.b-unknown { background:var(--unknown); } .b-unstable { background:var(--unstable); }
.muted { color:var(--unknown); font-size:12px; }
.err { color:var(--down); font-size:12px; word-break:break-word; }
.cause { color:var(--degraded); font-size:12px; font-weight:600; }
svg.spark { width:100%; height:36px; display:block; margin:4px 0; }
#graph { background:var(--card); border:1px solid var(--line); border-radius:6px; width:100%; }
table { border-collapse:collapse; background:var(--card); font-size:13px; }
th, td { border:1px solid var(--line); padding:3px 8px; text-align:left; }
td.c-passed { background:#dafbe1; } td.c-failed { background:#ffebe9; } td.c-error { background:#fbefff; }
td.c-skipped { background:#fff8c5; } td.c-not-run { background:#eaeef2; color:var(--unknown); }
tr.hop[data-status=passed] td.status { background:#dafbe1; color:var(--up); font-weight:600; }
tr.hop[data-status=failed] td.status, tr.hop[data-status=error] td.status { background:#cf222e; color:#fff; font-weight:600; }
tr.hop[data-status=skipped] td.status { background:#eaeef2; color:var(--unknown); }
.flowdots span { display:inline-block; width:10px; height:10px; margin-right:2px; border-radius:2px; }
@media print { header { position:static; } .tile { break-inside:avoid; } }
</style></head>
<body>
<header><h1>stackprobe · <span id="stack">…</span></h1><span id="overall">…</span>
<span class="muted" id="updated">waiting for the first probe round</span></header>
<main>
<section><h2>Services</h2><div id="tiles"></div></section>
<section><h2>Dependencies</h2><svg id="graph" height="120" role="img" aria-label="dependency graph"></svg></section>
<section id="flow"><h2>Synthetic flow <span class="muted" id="flowinfo"></span></h2>
<div id="flowfail" class="err"></div><div id="flowhops" class="muted">no flow yet</div>
<div class="flowdots" id="flowdots"></div></section>
<section><h2>Coverage <span class="muted" id="runinfo"></span></h2><div id="matrix" class="muted">no full run yet</div></section>
<section><h2>Checks of the last full run</h2><div id="checks" class="muted">no full run yet</div></section>
</main>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token");
const headers = token ? {Authorization: "Bearer " + token} : {};
const COLORS = {up:"#1a7f37", degraded:"#b08800", down:"#cf222e", unknown:"#6e7781", unstable:"#8250df"};
let lastRun = null;
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function svgEl(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  return e;
}
function sparkline(values) {
  const svg = svgEl("svg", {class: "spark", viewBox: "0 0 120 36", preserveAspectRatio: "none"});
  const ok = values.filter(v => v !== null);
  const max = Math.max(1, ...ok);
  const step = 120 / Math.max(1, values.length - 1);
  let d = "";
  values.forEach((v, i) => {
    const x = (i * step).toFixed(1);
    if (v === null) { svg.appendChild(svgEl("rect", {x: x, y: 0, width: 2, height: 36, fill: "#cf222e"})); d += " M"; return; }
    const y = (34 - 32 * v / max).toFixed(1);
    d += (d === "" || d.endsWith("M") ? " M" : " L") + x + " " + y;
  });
  svg.appendChild(svgEl("path", {d: d.replace(/ M M/g, " M").replace(/M$/, "").trim() || "M0 35", fill: "none", stroke: "#0969da", "stroke-width": 1.5}));
  return svg;
}
function pct(v) { return v === null || v === undefined ? "–" : v.toFixed(2) + "%"; }
function renderTiles(services) {
  const box = document.getElementById("tiles");
  box.replaceChildren();
  for (const s of Object.values(services)) {
    const t = el("div", {class: "tile", "data-service": s.name, "data-state": s.state});
    const top = el("div");
    top.append(el("span", {class: "name"}, s.name + " "), el("span", {class: "kind"}, s.kind + " "),
               el("span", {class: "badge b-" + s.state, "data-role": "state"}, s.state));
    t.append(top);
    t.append(sparkline(s.sparkline));
    t.append(el("div", {class: "muted"}, (s.latency_ms === null ? "no answer" : "probe " + s.latency_ms.toFixed(1) + " ms") +
      " · uptime 1h " + pct(s.uptime["1h"]) + " · 24h " + pct(s.uptime["24h"]) + " · 7d " + pct(s.uptime["7d"])));
    if (s.impacted_by.length) t.append(el("div", {class: "cause", "data-role": "cause"}, "root cause: " + s.impacted_by.join(", ") + " down"));
    if (s.reason && s.state !== "up") t.append(el("div", {class: "err"}, s.reason));
    else if (s.last_error) t.append(el("div", {class: "muted"}, "last error: " + s.last_error));
    box.append(t);
  }
}
function renderGraph(services) {
  const svg = document.getElementById("graph");
  svg.replaceChildren();
  const names = Object.keys(services);
  const depth = {};
  const d = n => depth[n] !== undefined ? depth[n] : (depth[n] = -1, depth[n] = 1 + Math.max(-1, ...services[n].depends_on.filter(x => x in services).map(d)));
  names.forEach(d);
  const layers = {};
  names.forEach(n => (layers[depth[n]] = layers[depth[n]] || []).push(n));
  const pos = {};
  const width = svg.clientWidth || 900;
  const nLayers = Object.keys(layers).length;
  Object.entries(layers).forEach(([l, ns]) => ns.forEach((n, i) => {
    pos[n] = {x: 20 + (width - 180) * (nLayers > 1 ? l / (nLayers - 1) : 0), y: 24 + i * 34};
  }));
  const height = 40 + 34 * Math.max(...Object.values(layers).map(ns => ns.length));
  svg.setAttribute("height", height);
  for (const s of Object.values(services)) for (const dep of s.depends_on) if (pos[dep]) {
    svg.appendChild(svgEl("line", {x1: pos[s.name].x, y1: pos[s.name].y, x2: pos[dep].x + 140, y2: pos[dep].y,
      stroke: s.impacted_by.length ? "#cf222e" : "#8c959f", "stroke-width": s.impacted_by.length ? 2.5 : 1.2}));
  }
  for (const s of Object.values(services)) {
    const g = svgEl("g", {"data-node": s.name, "data-state": s.state, "data-impacted": s.impacted_by.length ? "yes" : "no"});
    g.appendChild(svgEl("rect", {x: pos[s.name].x, y: pos[s.name].y - 12, width: 140, height: 24, rx: 5,
      fill: "#fff", stroke: COLORS[s.state], "stroke-width": s.impacted_by.length || s.state === "down" ? 3 : 1.5}));
    const label = svgEl("text", {x: pos[s.name].x + 8, y: pos[s.name].y + 4, "font-size": 12});
    label.textContent = s.name + " · " + s.state;
    g.appendChild(label);
    svg.appendChild(g);
  }
}
function renderMatrix(coverage) {
  const box = document.getElementById("matrix");
  if (!coverage) return;
  const table = el("table");
  for (const [name, row] of Object.entries(coverage.services)) {
    const tr = el("tr");
    tr.append(el("th", {}, name + " (" + row.kind + ") " + row.percent + "%"));
    for (const [cap, cell] of Object.entries(row.capabilities)) tr.append(el("td", {class: "c-" + cell.replace(" ", "-"), title: cell}, cap));
    table.append(tr);
  }
  box.replaceChildren(el("div", {}, "overall " + coverage.percent + "%"), table);
}
async function renderChecks(run) {
  if (!run || run.run_id === lastRun) return;
  const r = await fetch("api/runs/latest", {headers});
  if (!r.ok) return;
  const doc = await r.json();
  lastRun = run.run_id;
  const table = el("table");
  const head = el("tr");
  head.append(el("th", {}, "service"), el("th", {}, "check"), el("th", {}, "outcome"), el("th", {}, "message"));
  table.append(head);
  const order = {failed: 0, error: 1, skipped: 2, passed: 3};
  doc.results.sort((a, b) => order[a.outcome] - order[b.outcome]);
  for (const res of doc.results) {
    const tr = el("tr");
    tr.append(el("td", {}, res.service), el("td", {}, res.check), el("td", {class: "c-" + res.outcome}, res.outcome), el("td", {}, res.message));
    table.append(tr);
  }
  document.getElementById("checks").replaceChildren(table);
  document.getElementById("runinfo").textContent = "· run " + run.run_id + " · " + run.summary.passed + " passed, " +
    run.summary.failed + " failed, " + run.summary.error + " error, " + run.summary.skipped + " skipped";
}
function renderFlow(flow) {
  const info = document.getElementById("flowinfo");
  if (!flow || !flow.enabled) { info.textContent = "· off (--flow-interval 0)"; return; }
  info.textContent = "· every " + flow.interval_s + " s";
  const last = flow.last;
  if (last) {
    info.textContent += " · last " + last.outcome + " in " + ((last.duration_ms || 0) / 1000).toFixed(2) +
      " s at " + new Date(last.at * 1000).toLocaleTimeString() + (last.trace_id ? " · trace " + last.trace_id : "");
    const table = el("table", {"data-outcome": last.outcome});
    const head = el("tr");
    head.append(el("th", {}, "hop"), el("th", {}, "service"), el("th", {}, "status"), el("th", {}, "latency"), el("th", {}, "message"));
    table.append(head);
    for (const h of last.hops) {
      const tr = el("tr", {class: "hop", "data-hop": h.hop, "data-status": h.status});
      tr.append(el("td", {}, h.hop), el("td", {}, h.service || "–"), el("td", {class: "status"}, h.status),
                el("td", {}, h.latency_ms === null || h.latency_ms === undefined ? "–" : h.latency_ms.toFixed(1) + " ms"),
                el("td", {}, h.message));
      table.append(tr);
    }
    document.getElementById("flowhops").replaceChildren(table);
  }
  const fail = flow.last_failing_hop;
  document.getElementById("flowfail").textContent = fail ?
    "last failing hop: " + fail.hop + " (" + (fail.service || "–") + ") at " + new Date(fail.at * 1000).toLocaleTimeString() + ": " + fail.message : "";
  const dots = document.getElementById("flowdots");
  dots.replaceChildren(...flow.history.map(f => el("span", {title: (f.ok ? "passed" : "broke at " + f.failing_hop) +
    " · " + new Date(f.ts * 1000).toLocaleTimeString(), style: "background:" + (f.ok ? COLORS.up : COLORS.down)})));
}
async function tick() {
  try {
    const r = await fetch("api/status", {headers});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const doc = await r.json();
    document.getElementById("stack").textContent = doc.stack;
    const overall = document.getElementById("overall");
    const states = Object.values(doc.services).map(s => s.state);
    const worst = ["down", "unstable", "degraded", "unknown", "up"].find(s => states.includes(s)) || "unknown";
    overall.textContent = doc.all_up ? "all up" : worst;
    overall.style.background = COLORS[doc.all_up ? "up" : worst];
    document.getElementById("updated").textContent = "updated " + new Date(doc.generated_at * 1000).toLocaleTimeString();
    renderTiles(doc.services);
    renderGraph(doc.services);
    renderFlow(doc.flow);
    renderMatrix(doc.coverage);
    await renderChecks(doc.latest_run);
  } catch (e) {
    document.getElementById("updated").textContent = "monitor unreachable: " + e.message;
  }
}
tick();
setInterval(tick, 1000);
</script>
</body></html>
"""
