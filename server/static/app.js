// pulsewire dashboard: charts from the page's JSON, live updates from /api/events (server-sent events).
// Device-supplied strings only ever reach the page through textContent: never innerHTML.
"use strict";
(function () {
  const page = document.body.dataset.page;
  const live = document.body.dataset.live === "yes";
  const data = JSON.parse(document.getElementById("page-data").textContent || "{}");
  const PLOT = {displaylogo: false, responsive: true, displayModeBar: false};
  const LAYOUT = {margin: {t: 40, r: 20, b: 45, l: 55}, height: 300, font: {size: 12}};

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function plot(id, traces, layout) {
    const div = document.getElementById(id);
    if (div && window.Plotly) Plotly.newPlot(div, traces, Object.assign({}, LAYOUT, layout), PLOT);
  }

  // ------------------------------------------------------------------ alerts and their ECG strips
  const LABEL_COLOURS = {N: "#2a7", S: "#e80", V: "#d22", F: "#82c", Q: "#888"};

  function drawStrip(div, strip) {
    const t = strip.samples.map((_, i) => i / strip.fs_hz);
    const mv = strip.samples.map((v) => v / strip.gain);
    const top = Math.max.apply(null, mv);
    const beats = strip.beats.filter((b) => LABEL_COLOURS[b[1]]);
    const annotations = beats.map((b) => ({x: b[0] / strip.fs_hz, y: top, yshift: 12, showarrow: false,
      text: b[1], font: {color: LABEL_COLOURS[b[1]], size: 14}}));
    const shapes = beats.map((b) => ({type: "line", x0: b[0] / strip.fs_hz, x1: b[0] / strip.fs_hz, yref: "paper",
      y0: 0, y1: 1, line: {color: LABEL_COLOURS[b[1]], width: 1, dash: "dot"}}));
    Plotly.newPlot(div, [{x: t, y: mv, mode: "lines", line: {color: "#111", width: 1}, hoverinfo: "x+y"}],
      {margin: {t: 24, r: 10, b: 35, l: 45}, height: 190, annotations: annotations, shapes: shapes,
       xaxis: {title: {text: "s"}}, yaxis: {title: {text: "mV"}}, showlegend: false}, {displaylogo: false, responsive: true, displayModeBar: false});
  }

  function alertState(a) {
    if (a.resolved_at) return "resolved by " + a.resolved_by;
    if (a.acknowledged_at) return "acknowledged by " + a.acknowledged_by;
    return "open";
  }

  function alertCard(a) {
    const card = el("article", null, "alert kind-" + String(a.kind).replace(/[^a-z_]/g, ""));
    card.dataset.alertId = a.alert_id;
    const head = el("div", null, "alert-head");
    head.appendChild(el("strong", a.kind + " (" + a["class"] + ")"));
    head.appendChild(el("span", "patient " + a.patient, "patient"));
    head.appendChild(el("span", "device " + a.device, "device"));
    head.appendChild(el("span", a.time));
    head.appendChild(el("span", a.beats + " beats, " + a.heart_rate_bpm + " bpm, confidence " +
      (a.confidence_permille / 10).toFixed(1) + " %"));
    head.appendChild(el("span", alertState(a), "alert-state"));
    card.appendChild(head);
    if (live && !a.resolved_at) {
      const buttons = el("div", null, "actions");
      ["acknowledge", "resolve"].forEach((action) => {
        if (action === "acknowledge" && a.acknowledged_at) return;
        const b = el("button", action === "acknowledge" ? "Acknowledge" : "Resolve", "btn-" + action);
        b.addEventListener("click", () => act(a.alert_id, action));
        buttons.appendChild(b);
      });
      card.appendChild(buttons);
    }
    if (a.strip) {
      const div = el("div", null, "strip");
      card.appendChild(div);
      requestAnimationFrame(() => drawStrip(div, a.strip));
      if (live && data.labelling) card.appendChild(labelForm(a));
    }
    return card;
  }

  // a clinician confirms or corrects each beat of the strip; beats are named by their sample index in the
  // device's stream (strip start + offset), as the device names them
  function labelForm(a) {
    const form = el("div", null, "labels");
    form.appendChild(el("span", "Beat labels: "));
    const rows = a.strip.beats.map((b) => {
      const beat = a.strip.start + b[0];
      const label = el("label", null, "beat");
      label.appendChild(el("span", beat + " "));
      const select = el("select", null, "beat-label");
      select.dataset.beat = String(beat);
      Object.keys(LABEL_COLOURS).forEach((c) => {
        const o = el("option", c);
        o.value = c;
        if (c === b[1]) o.selected = true;
        select.appendChild(o);
      });
      label.appendChild(select);
      form.appendChild(label);
      return select;
    });
    const send = el("button", "Send labels to device", "send-labels");
    const result = el("span", null, "label-result");
    send.addEventListener("click", async () => {
      const body = {beats: rows.map((s) => Number(s.dataset.beat)), labels: rows.map((s) => s.value)};
      const r = await fetch("/api/alerts/" + encodeURIComponent(a.alert_id) + "/labels", {method: "POST",
        credentials: "same-origin", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
      const reply = await r.json();
      result.textContent = r.ok ? "Sent: " + reply.beats + " beats, " + reply.corrected + " corrected"
        : "Failed: " + reply.detail;
    });
    form.appendChild(send);
    form.appendChild(result);
    return form;
  }

  function showAlert(a, first) {
    // periodic summaries go below the events (on the device page everything is one list)
    const box = (a.kind === "summary" && document.getElementById("summaries")) || document.getElementById("alerts");
    if (!box) return;
    const old = box.querySelector('[data-alert-id="' + CSS.escape(a.alert_id) + '"]');
    const card = alertCard(a);
    if (old) box.replaceChild(card, old);
    else if (first) box.insertBefore(card, box.firstChild);
    else box.appendChild(card);
  }

  async function act(alertId, action) {
    const r = await fetch("/api/alerts/" + encodeURIComponent(alertId) + "/" + action,
      {method: "POST", credentials: "same-origin"});
    if (r.ok) showAlert(await r.json(), false);
  }

  // ------------------------------------------------------------------ charts per page
  function byFleet(rows) {
    const groups = {};
    rows.forEach((r) => { (groups[r.fleet] = groups[r.fleet] || []).push(r); });
    return groups;
  }

  function roundsCharts(rounds) {
    const groups = byFleet(rounds.filter((r) => r.state === "closed"));
    const fleets = Object.keys(groups).sort();
    const prefix = (f) => (fleets.length > 1 ? f + " " : "");
    const metrics = [], participation = [], bytes = [];
    fleets.forEach((f) => {
      const rs = groups[f], x = rs.map((r) => r.round), names = {};
      rs.forEach((r) => Object.keys(r.metrics || {}).forEach((k) => { names[k] = true; }));
      Object.keys(names).sort().forEach((k) => metrics.push({x: x, y: rs.map((r) => r.metrics[k]),
        name: prefix(f) + k, mode: "lines+markers"}));
      participation.push({x: x, y: rs.map((r) => r.participants), name: prefix(f) + "participants", type: "bar"});
      participation.push({x: x, y: rs.map((r) => r.declined), name: prefix(f) + "declined", type: "bar"});
      bytes.push({x: x, y: rs.map((r) => r.bytes_received), name: prefix(f) + "up (updates)", type: "bar"});
      bytes.push({x: x, y: rs.map((r) => r.bytes_down), name: prefix(f) + "down (models)", type: "bar"});
    });
    const roundAxis = {title: {text: "round"}, dtick: 1};
    plot("chart-metrics", metrics, {title: {text: "Metrics per round"}, xaxis: roundAxis});
    plot("chart-participation", participation, {title: {text: "Participation"}, barmode: "group", xaxis: roundAxis});
    plot("chart-bytes", bytes, {title: {text: "Bytes per round"}, barmode: "group", xaxis: roundAxis,
      yaxis: {title: {text: "bytes"}, automargin: true}});
  }

  function privacyCharts(d) {
    const groups = byFleet(d.rounds);
    const traces = Object.keys(groups).sort().map((f) => ({x: groups[f].map((r) => r.round),
      y: groups[f].map((r) => r.epsilon), name: f + " cumulative ε", mode: "lines+markers"}));
    if (d.budget && d.rounds.length) {
      const xs = d.rounds.map((r) => r.round);
      traces.push({x: [Math.min.apply(null, xs), Math.max.apply(null, xs)], y: [d.budget, d.budget],
        name: "budget", mode: "lines", line: {dash: "dash"}});
    }
    plot("chart-epsilon", traces, {title: {text: "ε after each round"}, xaxis: {title: {text: "round"}, dtick: 1}});
    const devices = Object.keys(d.per_device);
    plot("chart-device-epsilon", [{x: devices, y: devices.map((k) => d.per_device[k]), type: "bar"}],
      {title: {text: "ε per device"}, xaxis: {automargin: true, type: "category"}});
  }

  function securityChart(d) {
    plot("chart-security", Object.keys(d.series).map((reason) => ({x: d.series[reason].map((p) => p[0]),
      y: d.series[reason].map((p) => p[1]), name: reason, type: "bar"})),
      {title: {text: "Rejections by reason per minute"}, barmode: "stack", height: 340});
  }

  function fleetTable(d) {
    const body = document.querySelector("#fleet tbody");
    if (!body) return;
    const summary = document.getElementById("fleet-summary");
    if (summary) {
      summary.textContent = d.devices.length + " device(s): " + Object.keys(d.states).sort()
        .map((s) => d.states[s] + " " + s).join(", ") + "; " + d.unknown + " unknown (never enrolled).";
    }
    body.replaceChildren();
    d.devices.forEach((dev) => {
      const tr = el("tr", null, "state-" + String(dev.state).replace(/[^a-z-]/g, ""));
      tr.dataset.device = dev.name;
      const a = el("a", dev.name);
      a.href = "/devices/" + encodeURIComponent(dev.name);
      const first = el("td");
      first.appendChild(a);
      tr.appendChild(first);
      [dev.enrolled ? "yes" : "unknown", dev.state, dev.last_seen, dev.battery, dev.model_version, dev.role,
       dev.link, dev.signal_quality, dev.epsilon === null ? "" : Number(dev.epsilon).toFixed(3)].forEach((v, i) => {
        tr.appendChild(el("td", v === null || v === undefined ? "" : v, i === 1 ? "state" : undefined));
      });
      body.appendChild(tr);
    });
  }

  // ------------------------------------------------------------------ live updates
  let pending = null;
  function throttled(fn) {
    if (pending) return;
    pending = setTimeout(() => { pending = null; fn(); }, 1000);
  }

  async function refresh(url, fn) {
    const r = await fetch(url, {credentials: "same-origin"});
    if (r.ok) fn(await r.json());
  }

  function connect() {
    const source = new EventSource("/api/events");
    source.addEventListener("alert", (e) => { if (page === "alerts") showAlert(JSON.parse(e.data), true); });
    source.addEventListener("alert_state", (e) => { if (page === "alerts") showAlert(JSON.parse(e.data), false); });
    source.addEventListener("device", () => {
      if (page === "fleet") throttled(() => refresh("/api/devices", fleetTable));
    });
    source.addEventListener("round", () => {
      if (page === "rounds" || page === "privacy") throttled(() => location.reload());
    });
    source.addEventListener("security", () => { if (page === "security") throttled(() => location.reload()); });
    source.addEventListener("counters", () => { if (page === "security") throttled(() => location.reload()); });
    source.addEventListener("release", () => { if (page === "models") throttled(() => location.reload()); });
    document.body.dataset.sse = "connecting";
    source.onopen = () => { document.body.dataset.sse = "open"; };
  }

  function consentButtons() {
    document.querySelectorAll("#patients tr[data-patient]").forEach((tr) => {
      const b = tr.querySelector(".save-consent");
      if (!b) return;
      b.addEventListener("click", async () => {
        const body = {training: tr.querySelector(".c-training").checked, strip: tr.querySelector(".c-strip").checked};
        const r = await fetch("/api/consents/" + encodeURIComponent(tr.dataset.patient), {method: "PUT",
          credentials: "same-origin", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)});
        b.textContent = r.ok ? "Saved" : "Failed";
      });
    });
  }

  function rollbackButtons() {
    document.querySelectorAll("#releases button.rollback").forEach((b) => {
      b.addEventListener("click", async () => {
        const version = Number(b.dataset.version);
        if (!window.confirm("Roll the fleet back to version " + version + " and revoke the newer releases?")) return;
        const r = await fetch("/api/releases/rollback", {method: "POST", credentials: "same-origin",
          headers: {"Content-Type": "application/json"}, body: JSON.stringify({version: version})});
        const reply = await r.json();
        document.getElementById("rollback-result").textContent = r.ok
          ? "Pinned version " + reply.pinned + ", revoked " + reply.revoked.join(", ")
          : "Failed: " + reply.detail;
        if (r.ok) setTimeout(() => location.reload(), 1500);
      });
    });
  }

  if (page === "alerts" || page === "device") {
    (data.alerts || []).forEach((a) => showAlert(a, false));
    (data.summaries || []).forEach((a) => showAlert(a, false));
  }
  if (page === "rounds") roundsCharts(data.rounds || []);
  if (page === "privacy") privacyCharts(data);
  if (page === "security") securityChart(data);
  if (page === "patients") consentButtons();
  if (page === "models" && live) rollbackButtons();
  if (live) connect();
})();
