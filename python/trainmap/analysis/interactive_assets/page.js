// The interactive training map: wires the embedded Graphviz SVG to the JSON payload
// (hover tooltips, click selection) and draws the trajectory charts as plain SVG.
// Self-contained on purpose: no library, nothing fetched (docs/analysis.md).
(function () {
  "use strict";
  const D = JSON.parse(document.getElementById("tm-data").textContent);
  const SVG_NS = "http://www.w3.org/2000/svg"; // an XML namespace name, never fetched
  const runsById = new Map(D.runs.map((r) => [r.run, r]));
  const tip = document.getElementById("tooltip");
  const allRuns = D.runs.map((r) => r.run);
  let selection = { kind: "all", runs: allRuns };
  let soloRun = null;

  // ---- formatting --------------------------------------------------------------------
  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  const isNum = (x) => typeof x === "number" && isFinite(x);
  function fmt(x, digits) {
    if (!isNum(x)) return "–";
    const a = Math.abs(x);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return x.toExponential(Math.max(digits - 1, 1));
    return String(Number(x.toPrecision(digits)));
  }
  const fmtStep = (x) => (isNum(x) ? Math.round(x).toLocaleString("en-US") : "–");
  const signed = (x, digits) => (isNum(x) && x > 0 ? "+" : "") + fmt(x, digits);
  const arrow = (x) => (!isNum(x) ? "" : x > 0 ? "↑" : x < 0 ? "↓" : "→");
  const stateColor = (k) => D.colors[k % D.colors.length];

  // ---- key numbers -------------------------------------------------------------------
  function keyNumbers() {
    const censored = isNum(D.n_censored) && D.n_censored > 0 ? `, ${D.n_censored} censored` : "";
    const runs = D.n_runs_regression != null && D.n_runs_regression !== D.n_runs
      ? `${D.n_runs} (${D.n_runs_regression} in the OLS${censored})` : `${D.n_runs}${censored ? ` (${censored.slice(2)})` : ""}`;
    const r2 = (x) => (isNum(x) ? (Math.abs(x) < 5e-4 ? 0 : x).toFixed(3) : "–");
    const items = [
      ["Runs", runs],
      ["States", String(D.n_states) + (D.covariance ? ` (${D.covariance} covariance)` : "")],
      ["R²", r2(D.r2) + ` (LOO ${r2(D.r2_loo)})` + (isNum(D.p_value) ? `, p ${D.p_value < 0.001 ? "< 0.001" : "= " + fmt(D.p_value, 2)}` : "")],
      ["Concordance (Cox)", r2(D.concordance)],
      ["Dissimilarity", isNum(D.dissimilarity) ? D.dissimilarity.toFixed(3) : "–"],
      ["Forking", D.forking == null ? "–" : D.forking ? "yes" : "no"],
      ["Convergence", D.criterion || "–"],
      ["Detour states", D.detour_states.length ? D.detour_states.join(", ") : "none"],
    ];
    if (D.conditions) { // a comparison: one model over several setups' runs
      items.splice(1, 0, ["Conditions", D.conditions.map((c) => `${c.name} (${c.n_runs} runs)`).join(", ")]);
    }
    document.getElementById("key-numbers").innerHTML = items
      .map(([k, v]) => `<div data-key="${esc(k)}"><dt>${esc(k)}</dt><dd>${esc(v)}</dd></div>`).join("");
    const notes = document.getElementById("notes");
    if (notes) {
      notes.hidden = !(D.notes && D.notes.length);
      notes.innerHTML = (D.notes || []).map((n) => `<li>${esc(n)}</li>`).join("");
    }
  }

  // ---- tooltips ----------------------------------------------------------------------
  function showTip(htmlText, ev) {
    tip.innerHTML = htmlText;
    tip.hidden = false;
    moveTip(ev);
  }
  function moveTip(ev) {
    if (tip.hidden) return;
    const pad = 14, w = tip.offsetWidth, h = tip.offsetHeight;
    let x = ev.clientX + pad, y = ev.clientY + pad;
    if (x + w > window.innerWidth - 4) x = Math.max(4, ev.clientX - pad - w);
    if (y + h > window.innerHeight - 4) y = Math.max(4, window.innerHeight - 4 - h);
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }
  const hideTip = () => { tip.hidden = true; };

  // A comparison's per-condition use of a state or an edge: "condition k/N" rows in the
  // condition's colour (the joint map's legend).
  function byConditionRows(rows, head, cells) {
    if (!rows) return "";
    const colour = new Map(D.conditions.map((c) => [c.name, c.color]));
    return `<table class="by-condition"><tr>${head.map((h) => `<th>${h}</th>`).join("")}</tr>`
      + rows.map((r) => `<tr><td style="color:${colour.get(r.condition)}"><b>${esc(r.condition)}</b></td>`
        + cells(r).map((c) => `<td>${c}</td>`).join("") + "</tr>").join("") + "</table>";
  }

  function stateTip(st) {
    const flag = st.detour ? " — detour state" : st.runs.length === 0 ? " — not visited" : "";
    const coef = isNum(st.coefficient)
      ? `${signed(st.coefficient, 4)} steps` + (isNum(st.coefficient_p) ? ` (p = ${fmt(st.coefficient_p, 2)})` : "")
      : "–";
    const rows = D.metric_names.map((name, j) => {
      const z = isNum(st.z[j]) ? st.z[j].toFixed(2) : "–";
      return `<tr><td>${esc(D.metric_labels[j])}</td><td>${D.z_from_model[j] ? z : `<i>${z}</i>`}</td>`
        + `<td>${fmt(st.raw[j], 4)}</td></tr>`;
    }).join("");
    const only = st.by_condition && st.by_condition.filter((r) => r.runs > 0);
    const exclusive = only && only.length === 1 ? ` — only ${esc(only[0].condition)}` : "";
    return `<h3>State ${st.state}${flag}${exclusive}</h3>`
      + `<div>Runs visiting: <b>${st.runs.length} / ${D.n_runs}</b></div>`
      + byConditionRows(st.by_condition, ["condition", "runs visiting", "share of its checkpoints"],
        (r) => [`${r.runs}/${r.n_runs}`, isNum(r.occupancy) ? (100 * r.occupancy).toFixed(0) + " %" : "–"])
      + `<div>Mean dwell per visit: <b>${fmt(st.dwell_checkpoints, 3)}</b> checkpoints, <b>${fmtStep(st.dwell_steps)}</b> steps</div>`
      + `<div>Regression coefficient: <b>${esc(coef)}</b>; detour: <b>${st.detour ? "yes" : "no"}</b></div>`
      + `<table><tr><th>statistic</th><th>mean (z)</th><th>mean (raw)</th></tr>${rows}</table>`
      + `<div class="note">z: the HMM's state mean; <i>italic</i>: a statistic the model does not use `
      + `(mean of the per-run z-scores over the checkpoints decoded as this state). Raw: mean over those checkpoints.</div>`;
  }

  function edgeTip(e) {
    const conv = fmtStep(e.convergence_mean) + (isNum(e.convergence_sd) ? ` ± ${fmtStep(e.convergence_sd)}` : "");
    const rows = e.features.map((f) => `<tr><td>${esc(f.label)}</td><td>${arrow(f.shift)}${isNum(f.shift) ? Math.abs(f.shift).toFixed(2) : "–"}</td>`
      + `<td>${fmt(f.importance, 2)}</td></tr>`).join("");
    return `<h3>Edge ${e.source} → ${e.target}</h3>`
      + `<div>Runs using it: <b>${e.n_runs}/${e.n_runs_total}</b></div>`
      + byConditionRows(e.by_condition, ["condition", "runs using it"], (r) => [`${r.n_runs}/${r.n_runs_total}`])
      + `<div>Learned transition probability: <b>${fmt(e.transition_prob, 3)}</b></div>`
      + `<div>Convergence step of these runs: <b>${conv}</b></div>`
      + `<table><tr><th>top feature</th><th>shift (z)</th><th>importance</th></tr>${rows}</table>`
      + `<div class="note">Shift: μ<sub>${e.target}</sub> − μ<sub>${e.source}</sub> in standard deviations; `
      + `importance: share of the destination state's averaged importance (Appendix A).</div>`;
  }

  // ---- the graph ---------------------------------------------------------------------
  const graphSvg = document.querySelector("#graph > svg");
  const stateEls = new Map();
  const edgeEls = new Map();

  function mix(a, b, t) {
    const p = (h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16));
    const [x, y] = [p(a), p(b)];
    return "#" + x.map((v, i) => Math.round(v + (y[i] - v) * t).toString(16).padStart(2, "0")).join("");
  }

  function hover(el, text) {
    el.addEventListener("mouseenter", (ev) => showTip(text(), ev));
    el.addEventListener("mousemove", moveTip);
    el.addEventListener("mouseleave", hideTip);
  }

  function wireGraph() {
    graphSvg.querySelectorAll("g.node").forEach((g) => {
      const title = g.querySelector("title");
      const m = /^s(\d+)$/.exec(title ? title.textContent.trim() : "");
      if (title) title.remove(); // the browser's own tooltip would cover ours
      const st = m && D.states[+m[1]];
      if (!st) return;
      g.classList.add("tm-state");
      g.dataset.state = String(st.state);
      const shape = g.querySelector("ellipse, polygon");
      if (shape && !st.detour && st.runs.length > 0) shape.setAttribute("fill", mix("#eef3fb", "#7fa6d8", st.runs.length / D.n_runs));
      if (shape && shape.tagName === "ellipse") { // a dot in the state's line colour, as in the charts
        const [cx, cy, rx, ry] = ["cx", "cy", "rx", "ry"].map((a) => +shape.getAttribute(a));
        el(g, "circle", { cx: cx - 0.72 * rx, cy: cy - 0.72 * ry, r: 7, fill: stateColor(st.state), stroke: "#fff", "stroke-width": 1.5 });
      }
      hover(g, () => stateTip(st));
      g.addEventListener("click", (ev) => { ev.stopPropagation(); select({ kind: "state", key: st.state, runs: st.runs }); });
      stateEls.set(st.state, g);
    });
    const edges = new Map(D.edges.map((e) => [`${e.source}->${e.target}`, e]));
    graphSvg.querySelectorAll("g.edge").forEach((g) => {
      const title = g.querySelector("title");
      const key = title ? title.textContent.trim().replace(/^s(\d+)->s(\d+)$/, "$1->$2") : "";
      if (title) title.remove();
      const e = edges.get(key);
      if (!e) return; // the start marker's edges
      g.classList.add("tm-edge");
      g.dataset.edge = key;
      const path = g.querySelector("path");
      if (path) { // a wide invisible stroke, so that thin edges are easy to hover
        const hit = path.cloneNode(false);
        hit.setAttribute("class", "tm-hit");
        g.insertBefore(hit, path);
      }
      hover(g, () => edgeTip(e));
      g.addEventListener("click", (ev) => { ev.stopPropagation(); select({ kind: "edge", key, runs: e.runs, edge: e }); });
      edgeEls.set(key, g);
    });
    document.getElementById("graph").addEventListener("click", () => select({ kind: "all", runs: allRuns }));
    document.getElementById("graph-legend").innerHTML = D.conditions
      ? "One model fitted on every condition's runs: each state and edge lists the conditions whose runs use it "
        + "(k/N: runs of that condition; for a state, the share of their checkpoints in it). A state only one "
        + "condition visits has that condition's colour as its border; dashed grey: no run visits it. Edge width: "
        + "the largest share of a condition's runs using it. Hover for details; click to list the runs."
      : "Fill: share of runs visiting the state (light: few, dark: all). Orange with a red border: detour state. "
        + "Dashed grey: no run visits it. Edge width: runs using it. Dashed arrows: where runs start. "
        + "The dot on a state is its line colour in the charts.";
  }

  function markGraph() {
    for (const el of [...stateEls.values(), ...edgeEls.values()]) el.classList.remove("tm-selected", "tm-onpath");
    if (selection.kind === "state") stateEls.get(selection.key).classList.add("tm-selected");
    if (selection.kind === "edge") edgeEls.get(selection.key).classList.add("tm-selected");
    if (soloRun) { // the solo run's path through the map
      const r = runsById.get(soloRun);
      const seen = new Set(r.states);
      for (const k of seen) if (stateEls.has(k)) stateEls.get(k).classList.add("tm-onpath");
      for (let i = 1; i < r.states.length; i++) {
        const key = `${r.states[i - 1]}->${r.states[i]}`;
        if (edgeEls.has(key)) edgeEls.get(key).classList.add("tm-onpath");
      }
    }
  }

  // ---- selection and the run list ----------------------------------------------------
  function select(sel) {
    selection = sel;
    soloRun = null;
    render();
  }

  function convText(r) {
    const detour = isNum(r.first_detour_step) ? `; first detour at step ${fmtStep(r.first_detour_step)}` : "";
    if (!isNum(r.convergence_step)) return "convergence undefined" + detour;
    return (r.converged ? `converged at step ${fmtStep(r.convergence_step)}` : `never converged (counted as ${fmtStep(r.convergence_step)})`) + detour;
  }

  function renderList() {
    const title = document.getElementById("selection-title");
    const detail = document.getElementById("selection-detail");
    const n = selection.runs.length;
    if (selection.kind === "state") {
      const st = D.states[selection.key];
      title.textContent = `State ${st.state}${st.detour ? " (detour)" : ""}: ${n} of ${D.n_runs} runs visit it`;
    } else if (selection.kind === "edge") {
      const e = selection.edge;
      title.textContent = `Edge ${e.source} → ${e.target}: ${n} of ${D.n_runs} runs use it`;
    } else {
      title.textContent = `All runs (${n})`;
    }
    detail.textContent = soloRun ? `Showing run ${soloRun} alone; click it again to show every listed run.`
      : "Click a run to show it alone. Click a state or an edge to list the runs that use it; click the graph's background for all runs.";
    document.getElementById("selection-info").innerHTML = selection.kind === "state" ? stateTip(D.states[selection.key])
      : selection.kind === "edge" ? edgeTip(selection.edge) : "";
    const ordered = selection.runs.map((id) => runsById.get(id)).filter(Boolean)
      .sort((a, b) => (isNum(a.convergence_step) ? a.convergence_step : Infinity) - (isNum(b.convergence_step) ? b.convergence_step : Infinity));
    const list = document.getElementById("run-list");
    list.innerHTML = ordered.map((r) => `<li data-run="${esc(r.run)}"${r.run === soloRun ? ' class="active"' : ""}>`
      + `run ${esc(r.run)} <span class="sub">${convText(r)}</span></li>`).join("");
  }

  document.getElementById("run-list").addEventListener("click", (ev) => {
    const li = ev.target.closest("li[data-run]");
    if (!li) return;
    soloRun = soloRun === li.dataset.run ? null : li.dataset.run;
    render();
  });

  // ---- charts ------------------------------------------------------------------------
  function niceTicks(lo, hi, count) {
    const span = hi - lo;
    const raw = span / Math.max(count, 1);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => span / s <= count) || 10 * mag;
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    return { ticks, step };
  }
  function tickText(v, step) {
    const a = Math.max(Math.abs(v), Math.abs(step));
    if (a >= 1e6 || (a < 1e-3 && v !== 0)) return v.toExponential(1);
    const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
    return decimals === 0 ? Math.round(v).toLocaleString("en-US") : v.toFixed(Math.min(decimals, 6));
  }
  function el(parent, name, attrs, text) {
    const node = document.createElementNS(SVG_NS, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text != null) node.textContent = text;
    parent.appendChild(node);
    return node;
  }
  function interpolate(xs, ys, x) {
    for (let i = 0; i < xs.length; i++) {
      if (xs[i] === x && isNum(ys[i])) return ys[i];
      if (xs[i] > x) {
        if (i === 0 || !isNum(ys[i]) || !isNum(ys[i - 1])) return isNum(ys[i]) ? ys[i] : null;
        return ys[i - 1] + (ys[i] - ys[i - 1]) * (x - xs[i - 1]) / (xs[i] - xs[i - 1]);
      }
    }
    return null;
  }

  // series: [{run, xs, ys, states, conv, converged}]
  function drawChart(svg, series, cfg) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const W = svg.clientWidth || 600, H = svg.clientHeight || 320;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    const m = { l: 74, r: 16, t: 14, b: 46 };
    let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
    for (const s of series) s.ys.forEach((y, i) => {
      if (!isNum(y)) return;
      x0 = Math.min(x0, s.xs[i]); x1 = Math.max(x1, s.xs[i]);
      y0 = Math.min(y0, y); y1 = Math.max(y1, y);
    });
    if (!isFinite(x0)) {
      el(svg, "text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty-note" }, cfg.empty || "no data");
      return;
    }
    if (cfg.hline != null && isNum(cfg.hline.y)) { y0 = Math.min(y0, cfg.hline.y); y1 = Math.max(y1, cfg.hline.y); }
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { const d = Math.abs(y0) * 0.05 || 1; y0 -= d; y1 += d; }
    const pad = (y1 - y0) * 0.04; y0 -= pad; y1 += pad;
    const X = (x) => m.l + (x - x0) / (x1 - x0) * (W - m.l - m.r);
    const Y = (y) => H - m.b - (y - y0) / (y1 - y0) * (H - m.t - m.b);
    const xt = niceTicks(x0, x1, Math.max(2, Math.floor((W - m.l - m.r) / 90)));
    const yt = niceTicks(y0, y1, 5);
    const grid = el(svg, "g", { class: "grid" });
    const axis = el(svg, "g", { class: "axis" });
    for (const v of xt.ticks) {
      el(grid, "line", { x1: X(v), x2: X(v), y1: m.t, y2: H - m.b });
      el(axis, "text", { x: X(v), y: H - m.b + 15, "text-anchor": "middle" }, tickText(v, xt.step));
    }
    for (const v of yt.ticks) {
      el(grid, "line", { x1: m.l, x2: W - m.r, y1: Y(v), y2: Y(v) });
      el(axis, "text", { x: m.l - 6, y: Y(v) + 4, "text-anchor": "end" }, tickText(v, yt.step));
    }
    el(axis, "path", { d: `M${m.l},${m.t}V${H - m.b}H${W - m.r}`, fill: "none" });
    el(svg, "text", { x: (m.l + W - m.r) / 2, y: H - 8, "text-anchor": "middle", class: "axis-label" }, cfg.xlabel);
    el(svg, "text", { x: 0, y: 0, transform: `translate(15,${(m.t + H - m.b) / 2}) rotate(-90)`, "text-anchor": "middle", class: "axis-label" }, cfg.ylabel);
    if (cfg.hline != null && isNum(cfg.hline.y)) {
      el(svg, "line", { x1: m.l, x2: W - m.r, y1: Y(cfg.hline.y), y2: Y(cfg.hline.y), class: "threshold-line" });
      el(svg, "text", { x: m.l + 6, y: Y(cfg.hline.y) - 5, class: "threshold-label" }, cfg.hline.label);
    }
    const lines = el(svg, "g", { class: "lines" });
    for (const s of series) {
      const d = new Map(); // state -> path data, one <path> per state and run
      let prevState = null;
      for (let i = 1; i < s.xs.length; i++) {
        if (!isNum(s.ys[i]) || !isNum(s.ys[i - 1])) { prevState = null; continue; }
        const k = s.states[i];
        if (k !== prevState) d.set(k, (d.get(k) || "") + `M${X(s.xs[i - 1]).toFixed(1)},${Y(s.ys[i - 1]).toFixed(1)}`);
        d.set(k, d.get(k) + `L${X(s.xs[i]).toFixed(1)},${Y(s.ys[i]).toFixed(1)}`);
        prevState = k;
      }
      for (const [k, path] of d) el(lines, "path", { d: path, class: "run-line", stroke: stateColor(k), "data-run": s.run, "data-state": k });
      if (s.xs.length === 1 && isNum(s.ys[0])) el(lines, "circle", { cx: X(s.xs[0]), cy: Y(s.ys[0]), r: 2.5, fill: stateColor(s.states[0]), "data-run": s.run });
    }
    const marks = el(svg, "g", { class: "marks" });
    for (const s of series) {
      if (!isNum(s.conv) || !s.converged) continue;
      const y = interpolate(s.xs, s.ys, s.conv);
      if (series.length === 1) {
        el(marks, "line", { x1: X(s.conv), x2: X(s.conv), y1: m.t, y2: H - m.b, class: "conv-line" });
        el(marks, "text", { x: X(s.conv) + 5, y: m.t + 12, class: "threshold-label" }, `converged at step ${fmtStep(s.conv)}`);
      }
      if (isNum(y)) el(marks, "circle", { cx: X(s.conv), cy: Y(y), r: 3.5, class: "conv-mark", "data-run": s.run });
    }
  }

  function shownRuns() {
    return (soloRun ? [soloRun] : selection.runs).map((id) => runsById.get(id)).filter(Boolean);
  }

  function drawCharts() {
    const metric = document.getElementById("metric-select").value;
    const j = D.metric_names.indexOf(metric);
    const runs = shownRuns();
    drawChart(document.getElementById("metric-chart"),
      runs.map((r) => ({ run: r.run, xs: r.steps, ys: r.metrics[metric], states: r.states, conv: r.convergence_step, converged: r.converged })),
      { xlabel: "step", ylabel: `${D.metric_labels[j]} (${metric}), raw units`, empty: `no ${metric} values` });
    const col = document.getElementById("log-select").value;
    drawChart(document.getElementById("log-chart"),
      runs.map((r) => ({ run: r.run, xs: r.log.steps, ys: r.log.columns[col] || [], states: r.log.states, conv: r.convergence_step, converged: r.converged })),
      {
        xlabel: "step", ylabel: col || "no logged curves", empty: "no logged values",
        hline: col && col === D.criterion_column && isNum(D.threshold) ? { y: D.threshold, label: `threshold ${fmt(D.threshold, 4)}` } : null,
      });
    document.getElementById("metric-chart").dataset.metric = metric;
    document.getElementById("log-chart").dataset.column = col;
  }

  function fillMenus() {
    const metricSel = document.getElementById("metric-select");
    metricSel.innerHTML = D.metric_names.map((name, j) => {
      const has = D.runs.some((r) => r.metrics[name].some(isNum));
      return `<option value="${esc(name)}"${has ? "" : " disabled"}>${esc(D.metric_labels[j])} (${esc(name)})${has ? "" : " — no data"}</option>`;
    }).join("");
    const first = ["l2", ...D.metric_names].find((n) => D.runs.some((r) => r.metrics[n].some(isNum)));
    if (first) metricSel.value = first;
    const logSel = document.getElementById("log-select");
    logSel.innerHTML = D.log_columns.map((c) => `<option value="${esc(c)}">${esc(c)}</option>`).join("");
    metricSel.addEventListener("change", drawCharts);
    logSel.addEventListener("change", drawCharts);
    document.getElementById("state-legend").innerHTML = "Line colour: decoded state —"
      + D.states.map((s) => `<span class="chip" style="background:${stateColor(s.state)}"></span>state ${s.state}${s.detour ? " (detour)" : ""}`).join("")
      + ". Circles mark each run's convergence step.";
  }

  function render() {
    markGraph();
    renderList();
    drawCharts();
  }

  keyNumbers();
  wireGraph();
  fillMenus();
  render();
  document.addEventListener("keydown", (ev) => { if (ev.key === "Escape") select({ kind: "all", runs: allRuns }); });
  let resizeTimer = null;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(drawCharts, 100); });
  document.body.dataset.ready = "1";
  performance.mark("training-map-ready");
})();
