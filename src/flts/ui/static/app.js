// FLTS dashboard: one page, hash routes, data from the gateway's /ui/api read models.
// Every request carries the API key kept in sessionStorage; writes go to the gateway's own
// routes (POST /v1/datasets, the admin API). Text from the server is always set as text,
// never as HTML.
"use strict";

const KEY_NAME = "flts-api-key";
const main = document.getElementById("main");
let who = null; // {name, scopes}
let leaving = []; // cleanup of the page shown (timers)

// ------------------------------------------------------------------ helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function num(value, digits = 4) {
  return typeof value === "number" && isFinite(value) ? value.toFixed(digits) : "–";
}

function age(seconds) {
  if (typeof seconds !== "number") return "–";
  if (seconds < 120) return `${Math.round(seconds)} s`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

function when(iso) {
  return iso ? String(iso).replace("T", " ").slice(0, 19) : "–";
}

function coverage(levels) {
  if (!levels) return "–";
  return Object.entries(levels)
    .map(([level, share]) => `${Math.round(Number(level) * (Number(level) <= 1 ? 100 : 1))}%: ${num(share, 2)}`)
    .join(", ");
}

function toast(message) {
  const box = document.getElementById("toast");
  box.textContent = message;
  setTimeout(() => { if (box.textContent === message) box.textContent = ""; }, 6000);
}

class ApiError extends Error {
  constructor(status, detail, problems) {
    super(detail || `HTTP ${status}`);
    this.status = status;
    this.problems = problems || [];
  }
}

async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY_NAME);
  const headers = Object.assign({}, options.headers || {});
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = null; }
  if (!response.ok) {
    if (response.status === 401) askKey("The API key was refused: " + ((body && body.detail) || "401"));
    throw new ApiError(response.status, (body && body.detail) || text || response.statusText,
      body && body.problems);
  }
  return body;
}

function failure(error) {
  const box = el("div", { class: "alert", role: "alert" });
  if (error instanceof ApiError && error.status === 403) {
    box.append(el("strong", { text: "Refused (403): " }), error.message);
  } else if (error instanceof ApiError) {
    box.append(el("strong", { text: `Error ${error.status}: ` }), error.message);
  } else {
    box.append(el("strong", { text: "Error: " }), String(error.message || error));
  }
  return box;
}

function show(...nodes) {
  main.replaceChildren(...nodes);
}

function every(ms, fn) {
  const timer = setInterval(fn, ms);
  leaving.push(() => clearInterval(timer));
}

// The charting library (plotly.min.js, several MB) is loaded on the first page that draws,
// so the fleet and the other table pages never wait for it.
let plotly = null;
function loadPlotly() {
  if (!plotly) {
    plotly = new Promise((resolve, reject) => {
      const script = el("script", { src: "/ui/static/vendor/plotly.min.js" });
      script.addEventListener("load", () => resolve(window.Plotly));
      script.addEventListener("error", () => { plotly = null; reject(new Error("the charting library did not load")); });
      document.head.append(script);
    });
  }
  return plotly;
}

async function chart(node, traces, layout, label) {
  node.setAttribute("role", "img");
  node.setAttribute("aria-label", label);
  try { await loadPlotly(); } catch (error) {
    node.replaceChildren(el("p", { class: "error", text: error.message }));
    return;
  }
  const base = {
    margin: { l: 70, r: 20, t: 10, b: 45 },
    paper_bgcolor: "#ffffff", plot_bgcolor: "#ffffff",
    font: { family: "system-ui, sans-serif", size: 12, color: "#1b1f24" },
    legend: { orientation: "h", y: -0.18 },
  };
  window.Plotly.newPlot(node, traces, Object.assign(base, layout || {}),
    { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"] });
}

function table(headers, rows, options = {}) {
  const head = el("tr", {}, headers.map((h) => el("th", { scope: "col", class: h.num ? "num" : null }, h.label || h)));
  const body = rows.map((cells) => el("tr", cells.attrs || {}, (cells.cells || cells).map((c, i) =>
    c instanceof Node ? el("td", { class: headers[i] && headers[i].num ? "num" : null }, c)
      : el("td", { class: headers[i] && headers[i].num ? "num" : null, text: c }))));
  return el("table", { "aria-label": options.label || null },
    options.caption ? el("caption", { class: "visually-hidden", text: options.caption }) : null,
    el("thead", {}, head), el("tbody", {}, body));
}

// ------------------------------------------------------------------ the key

function askKey(message) {
  const dialog = document.getElementById("key-dialog");
  document.getElementById("key-error").textContent = message || "";
  if (!dialog.open) dialog.showModal();
  document.getElementById("key-input").focus();
}

document.getElementById("key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const input = document.getElementById("key-input");
  sessionStorage.setItem(KEY_NAME, input.value.trim());
  try {
    await whoami();
    input.value = "";
    document.getElementById("key-dialog").close();
    route();
  } catch (error) {
    document.getElementById("key-error").textContent = error.message;
  }
});
document.getElementById("change-key").addEventListener("click", () => askKey(""));

async function whoami() {
  who = await api("/ui/api/whoami");
  document.getElementById("who").textContent = `${who.name} (${who.scopes.join(", ")})`;
  return who;
}

function confirmAction(text) {
  const dialog = document.getElementById("confirm-dialog");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-reason").value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok" ? document.getElementById("confirm-reason").value : null);
    }, { once: true });
    dialog.showModal();
    document.getElementById("confirm-reason").focus();
  });
}

// ------------------------------------------------------------------ fleet

const fleetView = { offset: 0, limit: 50, sort: "identifier", order: "asc", q: "", state: "" };
const FLEET_COLUMNS = [
  { key: "identifier", label: "Identifier" },
  { key: "model_type", label: "Model" },
  { key: "evaluation_nrmse", label: "Eval NRMSE", num: true },
  { key: "live_nrmse", label: "Live NRMSE", num: true },
  { key: "live_coverage", label: "Live coverage", num: true },
  { key: "age_seconds", label: "Champion age", num: true },
  { key: "state", label: "Retraining" },
];

async function fleetPage() {
  const filter = el("input", { id: "fleet-filter", type: "search", value: fleetView.q, placeholder: "identifier or model" });
  const state = el("select", { id: "fleet-state" }, el("option", { value: "", text: "any" }));
  const size = el("select", { id: "fleet-size" }, [25, 50, 100, 200].map((n) =>
    el("option", { value: n, selected: n === fleetView.limit, text: String(n) })));
  const holder = el("div", { id: "fleet-table", "aria-live": "polite" }, el("p", { class: "muted", text: "Loading…" }));
  let typing = null;
  filter.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { fleetView.q = filter.value; fleetView.offset = 0; load(); }, 250);
  });
  state.addEventListener("change", () => { fleetView.state = state.value; fleetView.offset = 0; load(); });
  size.addEventListener("change", () => { fleetView.limit = Number(size.value); fleetView.offset = 0; load(); });
  show(
    el("h1", { text: "Fleet" }),
    el("div", { class: "toolbar" },
      el("div", { class: "field" }, el("label", { for: "fleet-filter", text: "Filter" }), filter),
      el("div", { class: "field" }, el("label", { for: "fleet-state", text: "Retraining state" }), state),
      el("div", { class: "field" }, el("label", { for: "fleet-size", text: "Rows per page" }), size)),
    holder);

  async function load() {
    const params = new URLSearchParams({
      offset: fleetView.offset, limit: fleetView.limit, sort: fleetView.sort,
      order: fleetView.order, q: fleetView.q, state: fleetView.state,
    });
    let page;
    try { page = await api(`/ui/api/fleet?${params}`); } catch (error) { holder.replaceChildren(failure(error)); return; }
    if (state.options.length === 1) {
      for (const s of page.states) state.append(el("option", { value: s, selected: s === fleetView.state, text: s }));
    }
    const head = el("tr", {}, FLEET_COLUMNS.map((c) => {
      const active = fleetView.sort === c.key;
      const button = el("button", { type: "button", class: "sort", "data-sort": c.key,
        onclick: () => {
          fleetView.order = active && fleetView.order === "asc" ? "desc" : "asc";
          fleetView.sort = c.key; fleetView.offset = 0; load();
        } }, c.label, active ? (fleetView.order === "asc" ? " ▲" : " ▼") : "");
      return el("th", { scope: "col", class: c.num ? "num" : null,
        "aria-sort": active ? (fleetView.order === "asc" ? "ascending" : "descending") : null }, button);
    }));
    const rows = page.rows.map((r) => el("tr", { "data-identifier": r.identifier },
      el("td", {}, el("a", { href: `#/station/${encodeURIComponent(r.identifier)}`, text: r.identifier })),
      el("td", { text: r.model_type || "no champion yet" }),
      el("td", { class: "num", text: num(r.evaluation_nrmse) }),
      el("td", { class: "num", text: num(r.live_nrmse) }),
      el("td", { class: "num", text: coverage(r.live_coverage) }),
      el("td", { class: "num", text: age(r.age_seconds) }),
      el("td", {}, el("span", { class: `badge ${r.state === "ok" || r.state === "retrained" ? "ok" : r.state === "refused" ? "bad" : "warn"}`, text: r.state }))));
    const first = page.matched ? page.offset + 1 : 0;
    const last = Math.min(page.offset + page.limit, page.matched);
    const prev = el("button", { type: "button", id: "fleet-prev", disabled: page.offset === 0,
      onclick: () => { fleetView.offset = Math.max(0, fleetView.offset - fleetView.limit); load(); } }, "Previous");
    const next = el("button", { type: "button", id: "fleet-next", disabled: last >= page.matched,
      onclick: () => { fleetView.offset += fleetView.limit; load(); } }, "Next");
    holder.replaceChildren(
      el("table", { id: "fleet", "aria-label": "Fleet", "data-rows": page.rows.length },
        el("thead", {}, head), el("tbody", {}, rows)),
      el("div", { class: "pager" }, prev, next,
        el("span", { id: "fleet-count", class: "muted",
          text: `${first}–${last} of ${page.matched} shown (${page.total} identifiers; live figures ${when(page.live_updated_at)})` })));
    performance.mark("fleet-rendered"); // User Timing: what benchmarks/ui_fleet.py reads
  }
  await load();
}

// ------------------------------------------------------------------ station

async function stationPage(identifier) {
  show(el("h1", { text: `Station ${identifier}` }), el("p", { class: "muted", text: "Loading…" }));
  let station;
  try { station = await api(`/ui/api/stations/${encodeURIComponent(identifier)}`); } catch (error) { show(el("h1", { text: `Station ${identifier}` }), failure(error)); return; }
  const champion = station.champion;
  const heading = el("h1", { text: `Station ${identifier}` });
  if (!champion) {
    show(heading, el("p", { text: "No champion yet: the first decision has not promoted a model." }),
      el("p", {}, el("a", { href: `#/decisions?identifier=${encodeURIComponent(identifier)}`, text: "Decisions" })));
    return;
  }
  const lineage = station.lineage;
  const facts = el("dl", { class: "facts", id: "lineage" },
    el("dt", { text: "Model" }), el("dd", { text: champion.model_type }),
    el("dt", { text: "Run" }), el("dd", {}, lineage.mlflow_url
      ? el("a", { href: lineage.mlflow_url, target: "_blank", rel: "noopener", text: champion.run_id })
      : el("code", { text: champion.run_id })),
    el("dt", { text: "Config hash" }), el("dd", {}, el("code", { text: champion.config_hash })),
    el("dt", { text: "Dataset" }), el("dd", {}, lineage.dataset
      ? el("a", { href: `#/data/${lineage.dataset.dataset_id}`, text: `${lineage.dataset.dataset_id} (${lineage.dataset.filename || lineage.dataset.source})` })
      : "not stored any more"),
    el("dt", { text: "Promoted" }), el("dd", { text: `${when(champion.promoted_at)} (${champion.action}${champion.actor ? " by " + champion.actor : ""})` }),
    el("dt", { text: "Reason" }), el("dd", { text: champion.reason || "–" }),
    el("dt", { text: "Evaluation NRMSE" }), el("dd", { text: num(champion.scores.nrmse) }));
  const target = el("select", { id: "series-target" }, station.targets.map((t) =>
    el("option", { value: t, selected: t === "down", text: t })));
  const plot = el("div", { id: "station-chart", class: "chart" });
  const source = el("p", { id: "series-source", class: "muted" });
  const horizon = el("div", { id: "per-horizon" });
  const line = station.decision && station.decision.champion_line;
  if (line && line.horizon && Object.keys(line.horizon).length) {
    const base = station.decision.baseline_horizon || {};
    horizon.append(table(
      [{ label: "Step" }, { label: "NRMSE", num: true }, { label: "MAE5", num: true }, { label: "MASE", num: true },
        { label: "Coverage" }, { label: "Persistence NRMSE", num: true }],
      Object.entries(line.horizon).map(([step, f]) => [step, num(f.nrmse), num(f.mae5, 2), num(f.mase, 3),
        coverage(f.coverage), num((base[step] || {}).nrmse)]), { label: "Per-horizon error" }));
  } else {
    horizon.append(el("p", { class: "muted", text: "The decision has no per-horizon figures." }));
  }
  const live = station.live.length
    ? table([{ label: "Step" }, { label: "n", num: true }, { label: "NRMSE", num: true }, { label: "Skill", num: true }, { label: "Coverage" }],
      station.live.map((f) => [String(f.step), String(f.n), num(f.nrmse), num(f.skill, 3), coverage(f.coverage)]), { label: "Live error" })
    : el("p", { class: "muted", text: "No live figures yet (the monitor scores served forecasts once their actuals arrive)." });
  show(heading,
    el("p", {}, el("a", { href: `#/promotions/${encodeURIComponent(identifier)}`, text: "Promotions" }), " · ",
      el("a", { href: `#/decisions?identifier=${encodeURIComponent(identifier)}`, text: "Decisions" })),
    el("section", { class: "card", "aria-labelledby": "series-title" },
      el("h2", { id: "series-title", text: "Actuals and forecasts" }),
      el("div", { class: "toolbar" }, el("div", { class: "field" }, el("label", { for: "series-target", text: "Target" }), target)),
      plot, source),
    el("div", { class: "grid" },
      el("section", { class: "card" }, el("h2", { text: "Lineage" }), facts),
      el("section", { class: "card" }, el("h2", { text: "Error per horizon step (test split)" }), horizon),
      el("section", { class: "card" }, el("h2", { text: "Live error" }), live)));

  async function draw() {
    let series;
    try {
      series = await api(`/ui/api/stations/${encodeURIComponent(identifier)}/series?target=${encodeURIComponent(target.value)}&points=500`);
    } catch (error) { plot.replaceChildren(failure(error)); return; }
    plot.dataset.source = series.actuals.source || "";
    plot.dataset.actualPoints = series.actuals.values.length;
    plot.dataset.forecastPoints = series.forecast.values.length;
    const traces = [];
    for (const [level, band] of Object.entries(series.forecast.bands)) {
      traces.push({ x: series.forecast.times, y: band.lower, type: "scatter", mode: "lines",
        line: { width: 0 }, hoverinfo: "skip", showlegend: false, name: `lower ${level}` });
      traces.push({ x: series.forecast.times, y: band.upper, type: "scatter", mode: "lines",
        line: { width: 0 }, fill: "tonexty", fillcolor: "rgba(11, 92, 173, 0.18)", name: `interval ${level}` });
    }
    traces.push({ x: series.actuals.times, y: series.actuals.values, type: "scatter", mode: "lines+markers",
      name: "actual", line: { color: "#1b1f24", width: 1.5 }, marker: { size: 3, color: "#1b1f24" } });
    traces.push({ x: series.forecast.times, y: series.forecast.values, type: "scatter", mode: "lines",
      name: "forecast (step 1)", line: { color: "#0b5cad", width: 2, dash: "dot" } });
    plot.replaceChildren();
    await chart(plot, traces, { yaxis: { title: { text: series.target } } },
      `${series.target} of ${identifier}: ${series.actuals.values.length} actuals from ${series.actuals.source || "nowhere"}, ` +
      `${series.forecast.values.length} forecasts from ${series.forecast.source || "nowhere"}`);
    source.textContent = `Actuals: ${series.actuals.values.length} from ${series.actuals.source || "no source yet"}; ` +
      `forecasts: ${series.forecast.values.length} from ${series.forecast.source || "no source yet"}` +
      (Object.keys(series.forecast.bands).length ? `; bands at ${Object.keys(series.forecast.bands).join(", ")}` : "; no interval band in this source");
    plot.dataset.drawn = "true";
  }
  target.addEventListener("change", draw);
  await draw();
  // Live stations: draw again as observations and served forecasts arrive.
  every(15000, () => { if (plot.dataset.source === "observations") draw(); });
}

// ------------------------------------------------------------------ decisions

function leaderboard(decision, status) {
  // With a ``status`` node, trained lines that were not promoted get a Promote button.
  const headers = [{ label: "Model" }, { label: "Status" }, { label: "NRMSE", num: true }, { label: "MAE5", num: true },
    { label: "RMSE5", num: true }, { label: "MASE", num: true }, { label: "Coverage" }, { label: "Train s", num: true },
    { label: "Promoted" }, { label: "Why" }];
  if (status) headers.push({ label: "Action" });
  return table(headers,
    decision.leaderboard.map((e) => {
      const cells = [e.model_type, e.status, num(e.nrmse), num(e.mae5, 2), num(e.rmse5, 2), num(e.mase, 3),
        coverage(e.coverage), num(e.train_seconds, 1), e.promoted ? "yes" : "no", e.reason || "–"];
      if (status) {
        cells.push(e.run_id && e.status === "SUCCESS" && !e.promoted
          ? el("button", { type: "button", class: "promote", "aria-label": `Promote ${e.model_type} run ${e.run_id}`,
            onclick: () => adminAct(status, "/v1/admin/promote", { run_id: e.run_id }, `Make ${e.model_type} run ${e.run_id} the champion of ${decision.identifier}?`) }, "Promote")
          : "–");
      }
      return { attrs: { class: e.promoted ? "promoted" : null, "data-model": e.model_type }, cells };
    }), { label: `Leaderboard of ${decision.config_hash}` });
}

function perHorizon(decision) {
  const steps = new Set();
  for (const e of decision.leaderboard) for (const s of Object.keys(e.horizon || {})) steps.add(s);
  if (!steps.size) return null;
  const ordered = [...steps].sort((a, b) => Number(a) - Number(b));
  return el("details", {}, el("summary", { text: "NRMSE per horizon step" }),
    table([{ label: "Model" }, ...ordered.map((s) => ({ label: `step ${s}`, num: true }))],
      [...decision.leaderboard.map((e) => [e.model_type, ...ordered.map((s) => num(((e.horizon || {})[s] || {}).nrmse))]),
        ["persistence (baseline)", ...ordered.map((s) => num(((decision.baseline_horizon || {})[s] || {}).nrmse))]]));
}

function decisionCard(d, status) {
  return el("section", { class: "card decision", "data-config": d.config_hash },
    el("h2", {}, `${d.identifier} · `, el("code", { text: d.config_hash.slice(0, 12) }), ` · ${when(d.decided_at)}`),
    el("p", {}, el("span", { class: `badge ${d.champion ? "ok" : "warn"}`, text: d.champion ? "promoted" : "not promoted" }),
      ` ${d.reason_code || ""} · state ${d.state} · ${d.test_windows} test windows`,
      d.missing_models && d.missing_models.length ? ` · missing: ${d.missing_models.join(", ")}` : "",
      d.previous_champion ? ` · previous champion ${d.previous_champion.model_type || ""} ${d.previous_champion.run_id || ""}` : ""),
    leaderboard(d, status), perHorizon(d));
}

async function decisionsPage(params) {
  const identifier = params.get("identifier") || "";
  const input = el("input", { id: "decisions-identifier", value: identifier, placeholder: "all identifiers" });
  const form = el("form", { class: "toolbar", onsubmit: (e) => { e.preventDefault(); location.hash = `#/decisions${input.value ? "?identifier=" + encodeURIComponent(input.value) : ""}`; } },
    el("div", { class: "field" }, el("label", { for: "decisions-identifier", text: "Identifier" }), input),
    el("button", { type: "submit", text: "Show" }));
  const list = el("div", { id: "decisions" }, el("p", { class: "muted", text: "Loading…" }));
  const status = el("div", { id: "decision-status", "aria-live": "polite" });
  show(el("h1", { text: "Decisions" }), form, status, list);
  try {
    const body = await api(`/ui/api/decisions${identifier ? "?identifier=" + encodeURIComponent(identifier) : ""}`);
    list.replaceChildren(...(body.decisions.length ? body.decisions.map((d) => decisionCard(d, status))
      : [el("p", { class: "muted", text: "No decision yet." })]));
  } catch (error) { list.replaceChildren(failure(error)); }
}

// ------------------------------------------------------------------ promotions

// Promote and rollback go to the gateway's admin API (admin scope), after a confirmation;
// the answer (the recorded promotion, or the refusal) is shown in ``status``.
async function adminAct(status, path, payload, text) {
  const reason = await confirmAction(text);
  if (reason === null) return false;
  if (reason) payload.reason = reason;
  try {
    const done = await api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(payload) });
    status.replaceChildren(el("div", { class: "notice", role: "status" },
      `Done: the champion of ${done.identifier} is now ${done.model_type} run ${done.run_id} (was ${done.previous_run_id || "none"}), recorded as ${done.actor || "?"}.`));
    return true;
  } catch (error) {
    const alert = failure(error);
    alert.setAttribute("tabindex", "-1");
    status.replaceChildren(alert);
    alert.focus();
    return false;
  }
}

async function promotionsPage(identifier) {
  const status = el("div", { id: "promotion-status", "aria-live": "polite" });
  const body = el("div", {}, el("p", { class: "muted", text: "Loading…" }));
  show(el("h1", { text: `Promotions of ${identifier}` }),
    el("p", {}, el("a", { href: `#/station/${encodeURIComponent(identifier)}`, text: "Station" })), status, body);

  const act = async (path, payload, text) => { if (await adminAct(status, path, payload, text)) await load(); };

  async function load() {
    let doc;
    try { doc = await api(`/ui/api/promotions/${encodeURIComponent(identifier)}`); } catch (error) { body.replaceChildren(failure(error)); return; }
    const current = doc.current;
    const admin = who && who.scopes.includes("admin");
    const rollback = el("button", { type: "button", id: "rollback", class: "danger",
      onclick: () => act("/v1/admin/rollback", { identifier }, `Roll ${identifier} back to the champion before ${current ? current.run_id : "?"}?`) }, "Roll back");
    const rows = doc.history.map((p) => ({
      attrs: { "data-run": p.run_id },
      cells: [when(p.promoted_at), p.action, p.model_type, el("code", { text: p.run_id }), p.previous_run_id || "–",
        num(p.scores.nrmse), p.actor || "evaluator", p.reason || "–",
        current && p.run_id === current.run_id ? el("span", { class: "badge ok", text: "champion" })
          : el("button", { type: "button", class: "promote", onclick: () => act("/v1/admin/promote", { run_id: p.run_id }, `Make run ${p.run_id} (${p.model_type}) the champion of ${identifier}?`) }, "Promote")],
    }));
    body.replaceChildren(
      el("section", { class: "card" }, el("h2", { text: "Champion" }),
        current ? el("p", { id: "current-champion" }, `${current.model_type} run `, el("code", { text: current.run_id }), ` since ${when(current.promoted_at)}`)
          : el("p", { text: "No champion." }),
        el("p", { class: "muted", text: admin ? "Your key has the admin scope." : "Rolling back and promoting need a key with the admin scope; the gateway refuses others." }),
        rollback),
      el("section", { class: "card" }, el("h2", { text: "History (newest first)" }),
        table(["When", "Action", "Model", "Run", "Previous run", { label: "NRMSE", num: true }, "By", "Reason", ""], rows,
          { label: "Promotion history" })));
  }
  await load();
}

// ------------------------------------------------------------------ data

function problemRows(problems) {
  // Problems name their file ("train: ", "test: ") and CSV lines, header = line 1
  // ("is not numeric at 5: 'abc'", "at 4, 9, 12 and 30 more").
  return problems.map((p) => {
    const file = (p.match(/^(train|test):/) || [])[1] || "";
    const lines = (p.match(/\bat ([0-9]+(?:, [0-9]+)*(?: and [0-9]+ more)?)/) || [])[1] || "";
    return [file || "–", lines.trim() || "–", p.replace(/^(train|test):\s*/, "")];
  });
}

async function dataPage() {
  const identifier = el("input", { id: "upload-identifier", value: "global", required: true, pattern: "[A-Za-z0-9][A-Za-z0-9_.\\-]{0,63}", title: "letters, digits, '_', '.' and '-', starting with a letter or digit" });
  const train = el("input", { id: "upload-train", type: "file", accept: ".csv,text/csv", "aria-describedby": "upload-chosen" });
  const test = el("input", { id: "upload-test", type: "file", accept: ".csv,text/csv" });
  const chosen = el("p", { id: "upload-chosen", class: "muted", text: "No file chosen." });
  const result = el("div", { id: "upload-result", "aria-live": "polite" });
  const progress = el("div", { id: "progress" });
  const drop = el("div", { class: "drop", id: "drop" },
    el("p", {}, el("strong", { text: "Drop the training CSV here" }), " (and its test CSV: a file whose name contains “test”), or choose them below."),
    el("div", { class: "toolbar", style: "justify-content:center" },
      el("div", { class: "field" }, el("label", { for: "upload-train", text: "Training CSV" }), train),
      el("div", { class: "field" }, el("label", { for: "upload-test", text: "Test CSV (optional)" }), test)),
    chosen);
  const files = { train: null, test: null };
  function describe() {
    chosen.textContent = files.train ? `Training: ${files.train.name} (${files.train.size} bytes)` +
      (files.test ? `; test: ${files.test.name} (${files.test.size} bytes)` : "; no test file: the last 20% is held out") : "No file chosen.";
  }
  train.addEventListener("change", () => { files.train = train.files[0] || null; describe(); });
  test.addEventListener("change", () => { files.test = test.files[0] || null; describe(); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault(); drop.classList.remove("over");
    for (const file of e.dataTransfer.files) {
      if (/test/i.test(file.name)) files.test = file; else files.train = file;
    }
    describe();
  });
  const submit = el("button", { type: "submit", class: "primary", id: "upload-submit" }, "Upload");
  const form = el("form", { id: "upload-form", onsubmit: async (e) => {
    e.preventDefault();
    if (!files.train) { result.replaceChildren(el("div", { class: "alert", role: "alert", text: "Choose or drop a training CSV first." })); return; }
    const data = new FormData();
    data.append("identifier", identifier.value);
    data.append("train", files.train, files.train.name);
    if (files.test) data.append("test", files.test, files.test.name);
    submit.disabled = true;
    result.replaceChildren(el("p", { class: "muted", text: "Uploading and validating…" }));
    try {
      const meta = await api("/v1/datasets", { method: "POST", body: data });
      result.replaceChildren(el("div", { class: "notice", role: "status" }, `Accepted: dataset `,
        el("a", { href: `#/data/${meta.dataset_id}`, text: meta.dataset_id }), ` of ${meta.identifier}, ${meta.train.rows} training rows.`));
      follow(meta.dataset_id, progress);
      listDatasets();
    } catch (error) {
      const nodes = [failure(error)];
      if (error.problems && error.problems.length) {
        nodes.push(table(["File", "CSV line", "Problem"], problemRows(error.problems), { label: "Validation problems" }));
        nodes[1].id = "problems";
      }
      result.replaceChildren(...nodes);
    } finally { submit.disabled = false; }
  } },
  el("div", { class: "toolbar" }, el("div", { class: "field" }, el("label", { for: "upload-identifier", text: "Identifier (station)" }), identifier)),
  drop, el("div", { class: "actions", style: "justify-content:flex-start" }, submit));
  const list = el("div", { id: "datasets" }, el("p", { class: "muted", text: "Loading…" }));
  show(el("h1", { text: "Data" }),
    el("section", { class: "card", "aria-labelledby": "upload-title" }, el("h2", { id: "upload-title", text: "Upload a dataset" }), form, result, progress),
    el("section", { class: "card" }, el("h2", { text: "Datasets" }), list));

  async function listDatasets() {
    try {
      const body = await api("/v1/datasets");
      list.replaceChildren(body.datasets.length ? table(
        ["Dataset", "Identifier", "Uploaded", { label: "Train rows", num: true }, { label: "Test rows", num: true }, "Test split", ""],
        body.datasets.map((d) => [el("a", { href: `#/data/${d.dataset_id}`, text: d.dataset_id }), d.identifier, when(d.uploaded_at),
          String((d.train || {}).rows ?? "–"), String((d.test || {}).rows ?? "–"), d.test_split || "–",
          el("button", { type: "button", onclick: () => follow(d.dataset_id, progress) }, "Progress")]),
        { label: "Datasets" }) : el("p", { class: "muted", text: "No dataset yet." }));
    } catch (error) { list.replaceChildren(failure(error)); }
  }
  await listDatasets();
}

function follow(datasetId, holder) {
  let stopped = false;
  leaving.push(() => { stopped = true; });
  const steps = el("ol", { class: "steps", id: "progress-steps", "aria-live": "polite" });
  const board = el("div", { id: "progress-leaderboard" });
  holder.replaceChildren(el("h2", {}, "Pipeline run of ", el("code", { text: datasetId })), steps, board);
  const mark = (done, failed) => el("span", { class: `mark ${failed ? "error" : done ? "ok" : "muted"}`, "aria-hidden": "true", text: failed ? "✗" : done ? "✓" : "…" });
  async function tick() {
    if (stopped) return;
    let p;
    try { p = await api(`/ui/api/datasets/${datasetId}/progress`); } catch (error) { holder.append(failure(error)); return; }
    const items = [el("li", { "data-step": "uploaded" }, mark(true), `Uploaded ${when(p.uploaded_at)}`),
      el("li", { "data-step": "processed" }, mark(!!p.config_hash), p.config_hash ? ["Processed: config ", el("code", { text: p.config_hash.slice(0, 12) })] : "Waiting for preprocessing")];
    const runs = Object.fromEntries(p.runs.map((r) => [r.model_type, r]));
    const types = [...new Set([...p.expected_models, ...Object.keys(runs)])];
    for (const type of types) {
      const r = runs[type];
      const text = !r ? "waiting" : r.status === "FINISHED" ? `trained in ${num(r.train_seconds, 1)} s` : r.status === "FAILED" ? `failed: ${r.error || ""}` : "training";
      items.push(el("li", { "data-step": `train-${type}`, "data-status": r ? r.status : "WAITING" }, mark(r && r.status === "FINISHED", r && r.status === "FAILED"), `${type}: ${text}`));
    }
    const d = p.decision;
    items.push(el("li", { "data-step": "decided" }, mark(p.finished), d ? `Decided ${when(d.decided_at)} (${d.reason_code || d.state})` : "Waiting for the evaluator"));
    if (p.finished) {
      items.push(el("li", { "data-step": "promoted" }, mark(!!d.champion),
        d.champion ? ["Promoted ", d.champion.model_type, " run ", el("code", { text: d.champion.run_id }), " · ",
          el("a", { href: `#/station/${encodeURIComponent(p.identifier)}`, text: "open the station" })] : "Not promoted: the champion stays"));
      board.replaceChildren(el("h3", { text: "Leaderboard" }), leaderboard(d), perHorizon(d) || "");
    }
    steps.replaceChildren(...items);
    holder.dataset.finished = String(p.finished);
    if (!p.finished) setTimeout(tick, 1000);
  }
  tick();
}

// ------------------------------------------------------------------ explore

async function explorePage(datasetId) {
  show(el("h1", {}, "Dataset ", el("code", { text: datasetId })), el("p", { class: "muted", text: "Reading the dataset…" }));
  let x;
  try { x = await api(`/ui/api/datasets/${datasetId}/explore`); } catch (error) { show(el("h1", { text: "Dataset" }), failure(error)); return; }
  const targets = x.correlation.targets;
  const summary = table(
    ["Column", { label: "Present", num: true }, { label: "Missing", num: true }, { label: "Min", num: true },
      { label: "Max", num: true }, { label: "Mean", num: true }, { label: "Std", num: true }, "Constant"],
    x.columns.map((c) => ({ attrs: { "data-column": c.column }, cells: [c.column, String(c.count), String(c.missing), num(c.min, 3), num(c.max, 3), num(c.mean, 3), num(c.std, 3),
      c.constant ? el("span", { class: "badge bad", text: "constant" }) : "no"] })), { label: "Column summary" });
  const target = el("select", { id: "explore-target" }, targets.map((t) => el("option", { value: t, selected: t === "down", text: t })));
  const series = el("div", { id: "explore-series", class: "chart" });
  const daily = el("div", { id: "explore-daily", class: "chart small" });
  const weekly = el("div", { id: "explore-weekly", class: "chart small" });
  const corr = el("div", { id: "explore-correlation", class: "chart" });
  show(el("h1", {}, "Dataset ", el("code", { text: datasetId })),
    el("p", { class: "muted", text: `${x.identifier}: ${x.rows} rows from ${when(x.start)} to ${when(x.end)}; the series is drawn in ${x.series.times.length} buckets of ${x.series.bucket_rows} rows.` }),
    el("section", { class: "card" }, el("h2", { text: "Columns" }), summary),
    el("section", { class: "card" }, el("h2", { text: "Series over time" }),
      el("div", { class: "toolbar" }, el("div", { class: "field" }, el("label", { for: "explore-target", text: "Target" }), target)), series),
    el("div", { class: "grid" },
      el("section", { class: "card" }, el("h2", { text: "Daily profile (mean by hour, UTC)" }), daily),
      el("section", { class: "card" }, el("h2", { text: "Weekly profile (mean by day and hour)" }), weekly)),
    el("section", { class: "card" }, el("h2", { text: "Correlation of inputs with targets" }), corr));
  function draw() {
    const t = target.value;
    series.replaceChildren(); daily.replaceChildren(); weekly.replaceChildren();
    chart(series, [
      ...bandTraces(x.series.times, x.series.min[t], x.series.max[t]),
      { x: x.series.times, y: x.series.mean[t], mode: "lines", line: { color: "#1b1f24", width: 1.5 }, name: "bucket mean" },
    ], { yaxis: { title: { text: t } } }, `${t} over time, ${x.series.times.length} buckets`);
    chart(daily, [{ x: x.profiles.hours, y: x.profiles.daily[t], type: "bar", marker: { color: "#0b5cad" }, name: t }],
      { xaxis: { title: { text: "hour of day" }, dtick: 2 } }, `Mean ${t} by hour of day`);
    chart(weekly, [{ z: x.profiles.weekly[t], x: x.profiles.hours, y: x.profiles.weekdays, type: "heatmap", colorscale: "Blues", reversescale: true }],
      { xaxis: { title: { text: "hour of day" }, dtick: 2 }, yaxis: { autorange: "reversed" } }, `Mean ${t} by day of week and hour`);
  }
  target.addEventListener("change", draw);
  draw();
  chart(corr, [{ z: x.correlation.values, x: targets, y: x.correlation.inputs, type: "heatmap", zmin: -1, zmax: 1, colorscale: "RdBu",
    text: x.correlation.values.map((r) => r.map((v) => num(v, 2))), texttemplate: "%{text}", hovertemplate: "%{y} / %{x}: %{z:.3f}<extra></extra>" }],
  { margin: { l: 110, r: 20, t: 10, b: 45 } }, "Correlation of each input with each target");
}

// A filled min–max band, one pair of traces per run of buckets without a gap: plotly's
// "tonexty" fill would otherwise bridge a gap (null) between two files with a wedge.
function bandTraces(times, low, high) {
  const traces = [];
  let start = 0;
  for (let i = 0; i <= times.length; i += 1) {
    if (i < times.length && low[i] !== null && high[i] !== null) continue;
    if (i > start) {
      const first = traces.length === 0;
      traces.push(
        { x: times.slice(start, i), y: low.slice(start, i), mode: "lines", line: { width: 0 }, showlegend: false, hoverinfo: "skip", name: "min" },
        { x: times.slice(start, i), y: high.slice(start, i), mode: "lines", line: { width: 0 }, fill: "tonexty", fillcolor: "rgba(11, 92, 173, 0.18)", name: "bucket min–max", legendgroup: "band", showlegend: first },
      );
    }
    start = i + 1;
  }
  return traces;
}

// ------------------------------------------------------------------ routing

async function route() {
  for (const stop of leaving) stop();
  leaving = [];
  const hash = location.hash || "#/fleet";
  const [path, query] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  for (const link of document.querySelectorAll("[data-nav]")) {
    if (link.dataset.nav === parts[0] || (parts[0] === "station" && link.dataset.nav === "fleet")
        || (parts[0] === "promotions" && link.dataset.nav === "fleet")) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  if (!sessionStorage.getItem(KEY_NAME)) { show(el("p", { class: "muted", text: "An API key is needed to read the dashboard." })); askKey(""); return; }
  // Who the key belongs to is asked beside the page's own data, not before it; only the
  // promotions page waits for it (it says whether the key may roll back).
  const identity = who ? Promise.resolve(who) : whoami();
  identity.catch((error) => show(failure(error)));
  try {
    if (parts[0] === "station" && parts[1]) await stationPage(parts[1]);
    else if (parts[0] === "decisions") await decisionsPage(params);
    else if (parts[0] === "promotions" && parts[1]) { await identity; await promotionsPage(parts[1]); }
    else if (parts[0] === "data" && parts[1]) await explorePage(parts[1]);
    else if (parts[0] === "data") await dataPage();
    else await fleetPage();
  } catch (error) { show(failure(error)); }
  document.title = `FLTS · ${main.querySelector("h1") ? main.querySelector("h1").textContent : "dashboard"}`;
}

window.addEventListener("hashchange", () => { route(); main.focus({ preventScroll: true }); });
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", route);
else route();
