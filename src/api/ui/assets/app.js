// switchyard live page: reads the admin API's overview stream (server-sent
// events read with fetch, so the admin token goes in the Authorization
// header), renders every model, and calls the admin API for actions.
"use strict";

(function () {
  const TOKEN_KEY = "switchyard.admin-token";
  const STALE_MS = 5000;          // no event for this long: the connection is lost
  const RETRY_MS = [1000, 2000, 5000];
  const DESTRUCTIVE = {
    "promote-full": "Promote the candidate in full now? All traffic moves to it at once.",
    abort: "Abort the rollout? Traffic returns to the stable version.",
    rollback: "Roll back to the previous stable version?",
  };
  const ACTIONS = [
    ["promote", "Promote"], ["promote-full", "Promote fully"], ["pause", "Pause"],
    ["resume", "Resume"], ["abort", "Abort"], ["retry", "Retry"],
  ];

  const S = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    server: null,
    models: [],
    history: new Map(), // "model/version" -> [[at_ms, rps, err, p50, p95, agree]]
    skew: 0,            // server clock - local clock (ms)
    lastEvent: 0,
    controller: null,
    retries: 0,
    retryTimer: null,
    results: new Map(), // model -> {ok, text}
    kept: new Map(),    // action buttons carried over from the last render
    fleet: null,
    fresh: false,       // the next history replaces what the page holds
    logOpen: new Map(), // model -> whether its audit log is open (the user's choice)
  };

  const $ = (id) => document.getElementById(id);

  // ---- small DOM helpers (text only: nothing from the server is parsed as HTML)
  function h(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      e.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
    }
    return e;
  }
  // basis points (the page's own split and stages), or the admin API's "10%"
  const pct = (w) => (typeof w === "string" ? w : `${(w / 100).toFixed(w % 100 ? 2 : 0)}%`);
  const fixed = (x, n) => (x === null || x === undefined || Number.isNaN(x) ? "–" : Number(x).toFixed(n));
  const ratio = (x) => (x === null || x === undefined ? "–" : `${(100 * x).toFixed(2)}%`);
  const ms = (x) => (x === null || x === undefined ? "–" : `${Number(x).toFixed(x < 10 ? 2 : 1)} ms`);
  const now = () => Date.now() + S.skew;
  function duration(secs) {
    secs = Math.max(0, Math.round(secs));
    if (secs < 60) return `${secs} s`;
    const m = Math.floor(secs / 60), s = secs % 60;
    if (m < 60) return s ? `${m} min ${s} s` : `${m} min`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }
  const clock = (secs) => new Date(secs * 1000).toLocaleTimeString();
  const domId = (model) => model.replace(/[^A-Za-z0-9_-]/g, "_");

  // ---- connection state and notices
  function setConn(state, text) {
    const c = $("conn");
    c.dataset.state = state;
    c.textContent = text;
  }
  function notice(text) {
    const n = $("notice");
    n.textContent = text || "";
    n.hidden = !text;
  }
  function headers(extra) {
    const h = Object.assign({ Accept: "application/json" }, extra || {});
    if (S.token) h.Authorization = `Bearer ${S.token}`;
    return h;
  }
  async function errorText(resp) {
    try {
      const body = await resp.json();
      if (body && typeof body.error === "string") return body.error;
    } catch (_) { /* not JSON */ }
    return `HTTP ${resp.status}`;
  }

  // ---- the event stream
  function connect() {
    clearTimeout(S.retryTimer);
    if (S.controller) S.controller.abort();
    const controller = new AbortController();
    S.controller = controller;
    setConn("connecting", "connecting…");
    readStream(controller).catch((e) => {
      if (controller.signal.aborted && S.controller !== controller) return; // replaced
      lost(e && e.message ? e.message : String(e));
    });
  }

  async function readStream(controller) {
    const resp = await fetch("/admin/v1/overview/stream", {
      headers: headers({ Accept: "text/event-stream" }), signal: controller.signal, cache: "no-store",
    });
    if (resp.status === 401) {
      const text = await errorText(resp);
      setConn("unauthorized", "needs the admin token");
      notice(`The admin API refused the token: ${text}`);
      askToken();
      return;
    }
    if (!resp.ok || !resp.body) throw new Error(await errorText(resp));
    notice("");
    S.retries = 0;
    S.fresh = true; // a new stream starts with the whole history again
    S.lastEvent = Date.now();
    setConn("live", "live");
    refreshFleet();
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        dispatch(block);
      }
    }
    throw new Error("the server closed the stream");
  }

  function dispatch(block) {
    S.lastEvent = Date.now();
    if ($("conn").dataset.state !== "live") setConn("live", "live");
    let name = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (!data.length) return; // a keep-alive comment
    const body = JSON.parse(data.join("\n"));
    if (name === "overview") applyOverview(body);
    else if (name === "history") applyHistory(body);
  }

  function lost(why) {
    setConn("lost", "connection lost, reconnecting…");
    $("conn").title = why || "";
    S.controller = null;
    const wait = RETRY_MS[Math.min(S.retries, RETRY_MS.length - 1)];
    S.retries++;
    clearTimeout(S.retryTimer);
    S.retryTimer = setTimeout(connect, wait);
  }

  // A stream that stopped delivering (the sampler ticks every second) is lost.
  setInterval(() => {
    if ($("conn").dataset.state === "live" && Date.now() - S.lastEvent > STALE_MS) {
      const c = S.controller;
      S.controller = null;
      if (c) c.abort();
      lost("no event for 5 s");
    }
    tickTimers();
  }, 1000);

  // ---- data
  function applyOverview(body) {
    S.server = body.server;
    S.skew = body.server.now_ms - Date.now();
    S.models = body.models;
    $("server-version").textContent = `v${body.server.version}`;
    render();
  }

  function applyHistory(body) {
    S.skew = body.now_ms - Date.now();
    if (S.fresh) {
      S.history.clear();
      S.fresh = false;
    }
    const oldest = body.now_ms - 900 * 1000;
    for (const s of body.series) {
      const key = `${s.model}/${s.version}`;
      const list = S.history.get(key) || [];
      for (const x of s.samples) {
        if (!list.length || x[0] > list[list.length - 1][0]) list.push(x);
      }
      while (list.length && list[0][0] < oldest) list.shift();
      S.history.set(key, list);
    }
    for (const m of S.models) renderCharts(m);
  }

  async function refreshOverview() {
    try {
      const resp = await fetch("/admin/v1/overview", { headers: headers(), cache: "no-store" });
      if (!resp.ok) return;
      const body = await resp.json();
      applyOverview(body);
    } catch (_) { /* the stream reports connection problems */ }
  }

  async function refreshFleet() {
    try {
      const resp = await fetch("/admin/v1/fleet", { headers: headers(), cache: "no-store" });
      S.fleet = resp.status === 200 ? await resp.json() : null;
    } catch (_) {
      S.fleet = null;
    }
    const f = $("fleet");
    if (S.fleet && S.fleet.mode && S.fleet.mode !== "local") {
      const leads = S.fleet.leader && S.fleet.leader === S.fleet.pod;
      f.textContent = `fleet: ${S.fleet.mode} · pod ${S.fleet.pod || "?"} · leader ${S.fleet.leader || "none"}${leads ? " (this pod)" : ""}`;
      f.hidden = false;
    } else {
      f.hidden = true;
    }
  }

  // ---- token
  function askToken() {
    const form = $("token-form");
    form.hidden = false;
    const input = $("token-input");
    input.value = "";
    input.focus();
  }
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    S.token = $("token-input").value.trim();
    if (S.token) sessionStorage.setItem(TOKEN_KEY, S.token);
    else sessionStorage.removeItem(TOKEN_KEY);
    $("token-form").hidden = true;
    notice("");
    connect();
  });
  $("token-cancel").addEventListener("click", () => { $("token-form").hidden = true; });
  $("token-button").addEventListener("click", askToken);

  // ---- actions
  function confirmAction(text) {
    const dialog = $("confirm");
    $("confirm-text").textContent = text;
    return new Promise((resolve) => {
      const done = (answer) => {
        $("confirm-ok").removeEventListener("click", ok);
        $("confirm-cancel").removeEventListener("click", cancel);
        dialog.removeEventListener("cancel", cancel);
        if (dialog.open) dialog.close();
        resolve(answer);
      };
      const ok = () => done(true);
      const cancel = (e) => { if (e) e.preventDefault(); done(false); };
      $("confirm-ok").addEventListener("click", ok);
      $("confirm-cancel").addEventListener("click", cancel);
      dialog.addEventListener("cancel", cancel);
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }

  async function act(model, action) {
    if (DESTRUCTIVE[action] && !(await confirmAction(`${model}: ${DESTRUCTIVE[action]}`))) return;
    const path = action === "rollback"
      ? `/admin/v1/models/${encodeURIComponent(model)}/rollback`
      : `/admin/v1/models/${encodeURIComponent(model)}/rollout/${action}`;
    let result;
    try {
      const resp = await fetch(path, { method: "POST", headers: headers(), cache: "no-store" });
      if (resp.ok) {
        const body = await resp.json();
        const phase = body.phase ? `: rollout ${body.phase}` : body.policy ? `: stable is version ${body.policy.stable}` : "";
        result = { ok: true, text: `${action} done${phase}` };
      } else {
        result = { ok: false, text: `${action} failed (${resp.status}): ${await errorText(resp)}` };
        if (resp.status === 401) notice(`The admin API refused the token: ${result.text}`);
      }
    } catch (e) {
      result = { ok: false, text: `${action} failed: ${e.message || e}` };
    }
    S.results.set(model, result);
    showResult(model);
    if (result.ok) refreshOverview();
  }

  function showResult(model) {
    const p = $(`result-${domId(model)}`);
    const r = S.results.get(model);
    if (!p || !r) return;
    p.textContent = r.text;
    p.className = `result ${r.ok ? "ok" : "bad"}`;
  }

  // ---- rendering
  function render() {
    const focused = document.activeElement && document.activeElement.id;
    const main = $("models");
    S.kept = new Map([...main.querySelectorAll("button[id^=act-]")].map((b) => [b.id, b]));
    main.replaceChildren();
    if (!S.models.length) main.appendChild(h("p", { class: "muted" }, "No models in the repository yet."));
    for (const m of S.models) main.appendChild(modelCard(m));
    for (const m of S.models) { renderCharts(m); showResult(m.name); }
    tickTimers();
    if (focused && $(focused)) $(focused).focus();
  }

  function modelCard(m) {
    const id = domId(m.name);
    return h("section", { class: "model", id: `model-${id}`, "aria-labelledby": `title-${id}` },
      h("h2", { id: `title-${id}` }, m.name,
        h("span", { class: "badge" }, `policy: ${m.policy_source}`),
        m.error ? h("span", { class: "error" }, m.error) : null),
      splitBar(m),
      versionsTable(m),
      rolloutPanel(m),
      h("div", { class: "actions" }, actionButtons(m)),
      h("p", { class: "result", id: `result-${id}`, role: "status", "aria-live": "polite" }),
      h("h3", {}, "Last 15 minutes"),
      h("div", { class: "charts", id: `charts-${id}` }),
      eventLog(m));
  }

  function splitBar(m) {
    const s = m.split || {};
    const bar = h("div", { class: "split", role: "img", id: `split-${domId(m.name)}` });
    const parts = [];
    if (s.stable) parts.push(["stable", s.stable]);
    if (s.candidate) parts.push(["candidate", s.candidate]);
    const label = [];
    for (const [role, p] of parts) {
      const seg = h("div", { class: role, title: `${role} v${p.version}: ${pct(p.weight_bp)} (${p.route})` },
        p.weight_bp >= 800 ? `${role} v${p.version} · ${pct(p.weight_bp)}` : "");
      seg.style.flexBasis = `${p.weight_bp / 100}%`;
      seg.style.flexGrow = "0";
      bar.appendChild(seg);
      label.push(`${role} version ${p.version} ${pct(p.weight_bp)}`);
    }
    bar.setAttribute("aria-label", `traffic split: ${label.join(", ")}`);
    const notes = [];
    for (const [role, p] of parts) {
      notes.push(h("span", {}, h("span", { class: `swatch ${role}` }), `${role} v${p.version}: ${pct(p.weight_bp)}, route `,
        h("code", {}, p.route), role === "candidate" && p.route === "sticky" ? " (users hashed; no user key: weighted)" : ""));
    }
    if (s.shadow) notes.push(h("span", {}, h("span", { class: "swatch shadow" }), `shadow v${s.shadow.version}: mirrors ${ratio(s.shadow.rate)} of requests (off the request path)`));
    if (s.preview) notes.push(h("span", {}, `preview v${s.preview}: no traffic, label `, h("code", {}, "preview")));
    if (s.allow_list) notes.push(h("span", {}, `allow-list: ${s.allow_list} user(s) → candidate, route `, h("code", {}, "allow-list")));
    if (s.pins && s.pins !== "off") notes.push(h("span", {}, "pins honoured: ", h("code", {}, s.pins)));
    return h("div", {}, bar, h("p", { class: "split-notes muted" }, notes));
  }

  function latest(model, version) {
    const list = S.history.get(`${model}/${version}`);
    return list && list.length ? list[list.length - 1] : null;
  }

  function versionsTable(m) {
    const labels = {};
    for (const [name, v] of Object.entries(m.labels || {})) (labels[v] = labels[v] || []).push(name);
    const rows = m.versions.map((v) => {
      const x = latest(m.name, v.version);
      return h("tr", { id: `version-${domId(m.name)}-${v.version}` },
        h("td", { class: "num" }, `v${v.version}`),
        h("td", {}, h("span", { class: `badge state-${v.state}` }, v.state), v.reason ? h("div", { class: "error" }, v.reason) : null),
        h("td", {}, (labels[v.version] || []).join(", ")),
        h("td", { class: "num" }, pct(v.share_bp || 0)),
        h("td", { class: "num", "data-live": `${m.name}/${v.version}/rps` }, x ? fixed(x[1], 1) : "–"),
        h("td", { class: "num", "data-live": `${m.name}/${v.version}/err` }, x ? ratio(x[2]) : "–"),
        h("td", { class: "num", "data-live": `${m.name}/${v.version}/p95` }, x ? ms(x[4]) : "–"),
        h("td", {}, h("span", { class: `badge ${v.breaker === "closed" ? "" : "bad"}` }, v.breaker)));
    });
    return h("table", { class: "versions" },
      h("thead", {}, h("tr", {}, ["version", "state", "labels", "share", "req/s", "errors", "p95", "breaker"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, rows));
  }

  function stageName(st) {
    switch (st.kind) {
      case "weight": return pct(st.weight_bp);
      case "split": return `A/B ${pct(st.weight_bp)}`;
      default: return st.kind;
    }
  }

  function rolloutPanel(m) {
    const r = m.rollout;
    if (!r) return h("p", { class: "muted" }, "No rollout yet.");
    const id = domId(m.name);
    const n = r.stages.length;
    const stage = r.stages[Math.min(r.step, n - 1)];
    const steps = h("div", { class: "steps", "aria-label": "steps" }, r.stages.map((st, i) => {
      const cls = r.phase === "promoted" || i < r.step ? "done" : i === r.step && !["aborted", "validating"].includes(r.phase) ? "current" : "";
      return h("span", { class: cls }, `${i + 1}. ${stageName(st)}${st.bake_secs ? ` for ${duration(st.bake_secs)}` : ""}`);
    }));
    const facts = [
      h("span", {}, "step ", h("strong", { id: `step-${id}` }, `${Math.min(r.step + 1, n)} of ${n}`)),
      h("span", {}, "candidate weight ", h("strong", { class: "num", id: `weight-${id}` }, pct(r.weight))),
      r.bake_ends_at ? h("span", {}, "bake: ", h("strong", { "data-until": r.bake_ends_at, "data-after": " left", "data-done": "done" }, "")) : null,
      r.next_analysis_at ? h("span", {}, "next analysis: ", h("strong", { "data-until": r.next_analysis_at, "data-before": "in ", "data-done": "due" }, "")) : null,
      r.deadline_at ? h("span", { class: "error" }, "inconclusive; progress deadline: ", h("strong", { "data-until": r.deadline_at, "data-before": "aborts in ", "data-done": "now" }, "")) : null,
      h("span", {}, `failed analyses ${r.failures} of ${r.thresholds.failure_limit}`),
      h("span", { class: "muted" }, `started ${clock(r.started_at)}`),
    ];
    return h("div", { class: "rollout", id: `rollout-${id}` },
      h("div", { class: "rollout-head" },
        h("strong", {}, `Rollout #${r.id}: ${r.spec.strategy}, v${r.stable} → v${r.candidate}`),
        h("span", { class: `badge phase-${r.phase}`, id: `phase-${id}` }, r.phase)),
      steps,
      h("div", { class: "facts" }, facts),
      r.reason ? h("p", { class: "reason" }, h("strong", {}, r.phase === "aborted" ? "Why it aborted: " : "Outcome: "), r.reason) : null,
      analysisTable(m, r));
  }

  // One row: metric, stable, candidate, threshold, verdict ("pass" | "fail" | "wait").
  function row(metric, stable, candidate, threshold, verdict) {
    const mark = { pass: "✓ pass", fail: "✗ fail", wait: "… wait" }[verdict] || "";
    return h("tr", {}, h("th", { scope: "row" }, metric), h("td", { class: "num" }, stable), h("td", { class: "num" }, candidate),
      h("td", { class: "num" }, threshold), h("td", { class: verdict || "" }, mark));
  }

  function analysisTable(m, r) {
    const a = r.last_analysis || {};
    const t = r.thresholds;
    const rows = [];
    const me = a.measures;
    if (me) {
      const enough = me.requests.stable >= me.requests.min && me.requests.candidate >= me.requests.min;
      rows.push(row("requests", me.requests.stable, me.requests.candidate, `≥ ${me.requests.min} each`, enough ? "pass" : "wait"));
      const e = me.error_rate;
      rows.push(row("error rate", ratio(e.stable), ratio(e.candidate),
        `≤ ${ratio(e.limit)} (max of ×${t.max_error_rate_ratio}, +${ratio(t.max_error_rate_delta)})`, enough ? (e.candidate <= e.limit ? "pass" : "fail") : "wait"));
      const p = me.p95_ms;
      rows.push(row("p95 latency", ms(p.stable), ms(p.candidate),
        `≤ ${ms(p.limit)} (ratio ${fixed(me.p95_ratio, 2)} vs max ${me.max_p95_ratio})`, enough ? (p.candidate <= p.limit ? "pass" : "fail") : "wait"));
      if (me.feedback) {
        const f = me.feedback;
        rows.push(row("feedback mean", fixed(f.stable, 3), fixed(f.candidate, 3),
          `≥ ${fixed(f.limit, 3)} (Δ ≥ ${me.min_feedback_delta})`, enough ? (f.candidate >= f.limit ? "pass" : "fail") : "wait"));
      } else {
        rows.push(row("feedback mean", "–", "–", `Δ ≥ ${t.min_feedback_delta} (compared once both have feedback)`, ""));
      }
    }
    if (a.shadow || t.min_agreement !== undefined) {
      const sh = a.shadow || { compared: 0, agreement: null, errors: 0 };
      const enough = sh.compared >= t.min_samples;
      rows.push(row("shadow comparisons", "", `${sh.compared} (${sh.errors} errors)`, `≥ ${t.min_samples}`, enough ? "pass" : "wait"));
      if (t.min_agreement !== undefined) {
        rows.push(row("shadow agreement", "", ratio(sh.agreement), `≥ ${ratio(t.min_agreement)}`,
          enough ? (sh.agreement >= t.min_agreement ? "pass" : "fail") : "wait"));
      }
    }
    const ab = a.ab || (r.ab_result && r.ab_result.result);
    if (t.alpha !== undefined) {
      if (ab) {
        rows.push(row("feedback samples", ab.n_stable, ab.n_candidate, `≥ ${t.min_samples} each`,
          ab.n_stable >= t.min_samples && ab.n_candidate >= t.min_samples ? "pass" : "wait"));
        rows.push(row("feedback mean", fixed(ab.mean_stable, 4), fixed(ab.mean_candidate, 4),
          `Δ ${fixed(ab.difference, 4)}, 95% CI [${fixed(ab.ci95[0], 4)}, ${fixed(ab.ci95[1], 4)}]`, ""));
        rows.push(row("A/B p-value", "", fixed(ab.p_value, 4), `< α ${t.alpha} (${ab.test})`, ab.p_value < t.alpha ? "pass" : "wait"));
      } else {
        rows.push(row("A/B p-value", "", "–", `< α ${t.alpha}; needs ≥ 2 feedback values per arm`, "wait"));
      }
      if (r.ab_result && r.ab_result.recommendation) {
        rows.push(row("A/B result", "", r.ab_result.winner || "", r.ab_result.recommendation, ""));
      }
    }
    const verdict = a.verdict;
    const when = r.last_analysis_at ? `Last analysis at ${clock(r.last_analysis_at)}` : "No analysis yet";
    return h("div", {},
      h("h3", {}, "Analysis"),
      h("p", { class: "muted", id: `verdict-${domId(m.name)}` }, when,
        verdict ? `: ${verdict.result}${verdict.detail ? ` (${verdict.detail})` : ""}` : ""),
      rows.length ? h("table", { class: "analysis" },
        h("thead", {}, h("tr", {}, ["metric", "stable", "candidate", "threshold", ""].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, rows)) : null);
  }

  function actionButtons(m) {
    const r = m.rollout;
    const phase = r ? r.phase : null;
    const allowed = {
      promote: phase === "progressing" || phase === "paused",
      "promote-full": !!phase && !["promoted", "aborted"].includes(phase),
      pause: phase === "progressing",
      resume: phase === "paused",
      abort: !!phase && !["promoted", "aborted"].includes(phase),
      retry: phase === "aborted",
    };
    const id = domId(m.name);
    const buttons = ACTIONS.map(([action, label]) => button(m.name, action, {
      id: `act-${id}-${action}`, class: DESTRUCTIVE[action] ? "danger" : "", disabled: !allowed[action], label,
    }));
    buttons.push(button(m.name, "rollback", {
      id: `act-${id}-rollback`, class: "danger", disabled: !m.previous_stable,
      title: m.previous_stable ? `back to version ${m.previous_stable}` : "no previous stable version is kept",
      label: m.previous_stable ? `Roll back to v${m.previous_stable}` : "Roll back",
    }));
    return buttons;
  }

  // An action button survives re-renders: the same element is updated and moved
  // into the new card, so a click that lands while an update arrives (every
  // second during analysis) still reaches it, and focus stays where it was.
  function button(model, action, b) {
    let e = S.kept.get(b.id);
    if (!e) {
      e = h("button", { type: "button", id: b.id, onclick: () => act(model, action) });
    }
    e.className = b.class;
    e.disabled = b.disabled;
    if (b.title) e.title = b.title;
    else e.removeAttribute("title");
    if (e.textContent !== b.label) e.textContent = b.label;
    return e;
  }

  // open when there are events, until the user opens or closes it: then as
  // they left it, across re-renders
  function eventLog(m) {
    const events = (m.events || []).slice().reverse();
    const open = S.logOpen.has(m.name) ? S.logOpen.get(m.name) : events.length > 0;
    const log = h("details", { class: "events", id: `log-${domId(m.name)}`, open },
      h("summary", {}, `Audit log (${events.length} most recent)`),
      events.length ? h("table", {},
        h("thead", {}, h("tr", {}, ["time", "rollout", "phase", "step", "weight", "by", "decision"].map((c) => h("th", { scope: "col" }, c)))),
        h("tbody", {}, events.map((e) => h("tr", {},
          h("td", { class: "num" }, clock(e.at)), h("td", { class: "num" }, `#${e.rollout}`), h("td", {}, e.phase),
          h("td", { class: "num" }, e.step + 1), h("td", { class: "num" }, pct(e.weight)), h("td", {}, e.actor), h("td", {}, e.decision)))))
        : h("p", { class: "muted" }, "No events."));
    log.addEventListener("toggle", () => S.logOpen.set(m.name, log.open));
    return log;
  }

  // the same colours as the split bar's roles; other versions from a palette
  const ROLE = { stable: "#2f6db5", candidate: "#d9822b", shadow: "#7b5ea7" };
  const PALETTE = ["#1b7f4b", "#4f7a8a", "#a05d95", "#6b6b2f", "#8a4b2f"];

  function renderCharts(m) {
    const box = $(`charts-${domId(m.name)}`);
    if (!box) return;
    const t1 = now();
    const t0 = t1 - 15 * 60 * 1000;
    const versions = m.versions.map((v) => v.version);
    const split = m.split || {};
    const color = (v) => {
      if (split.stable && split.stable.version === v) return ROLE.stable;
      if (split.candidate && split.candidate.version === v) return ROLE.candidate;
      if (split.shadow && split.shadow.version === v) return ROLE.shadow;
      return PALETTE[v % PALETTE.length];
    };
    const series = (col, dash) => versions.map((v) => ({
      name: `v${v}`, color: color(v), dash,
      points: (S.history.get(`${m.name}/${v}`) || []).map((x) => [x[0], x[col]]),
    }));
    const last = (col, fmt) => versions.map((v) => {
      const x = latest(m.name, v);
      return x && x[col] !== null ? `v${v} ${fmt(x[col])}` : null;
    }).filter(Boolean).join(" · ");
    const C = window.SwitchyardCharts;
    const charts = [
      ["requests/s", 1, (x) => fixed(x, x < 10 ? 1 : 0), null, series(1)],
      ["error ratio", 2, (x) => `${(100 * x).toFixed(x < 0.1 ? 1 : 0)}%`, null, series(2)],
      ["latency p50 (solid) / p95 (dashed)", 4, (x) => `${fixed(x, x < 10 ? 1 : 0)}ms`, null, series(3).concat(series(4, true))],
      ["shadow agreement", 5, (x) => `${Math.round(100 * x)}%`, 1, series(5)],
    ];
    box.replaceChildren(...charts.map(([label, col, fmt, max, s]) => h("div", { class: "chart" },
      h("h4", {}, h("span", {}, label), h("span", { class: "muted num" }, last(col, fmt))),
      C.line({ label: `${m.name} ${label}, last 15 minutes`, t0, t1, series: s, format: fmt, max: max === null ? undefined : max }))));
    box.appendChild(h("div", { class: "legend" }, versions.map((v) => h("span", {}, h("span", { class: "swatch", style: undefined }, ""), `v${v}`))));
    box.querySelectorAll(".legend .swatch").forEach((sw, i) => { sw.style.background = color(versions[i]); });
    for (const v of versions) {
      const x = latest(m.name, v);
      const set = (what, text) => {
        const cell = document.querySelector(`[data-live="${CSS.escape(`${m.name}/${v}/${what}`)}"]`);
        if (cell) cell.textContent = text;
      };
      set("rps", x ? fixed(x[1], 1) : "–");
      set("err", x ? ratio(x[2]) : "–");
      set("p95", x ? ms(x[4]) : "–");
    }
  }

  // Countdowns (bake, next analysis, deadline) tick locally between events.
  function tickTimers() {
    document.querySelectorAll("[data-until]").forEach((e) => {
      const until = Number(e.dataset.until) * 1000;
      const left = (until - now()) / 1000;
      e.textContent = left > 0 ? `${e.dataset.before || ""}${duration(left)}${e.dataset.after || ""}` : e.dataset.done;
    });
  }

  connect();
})();
