// hopflow dashboard: plain JavaScript, no build step. Every datum comes from the JSON API with the
// key kept in sessionStorage; text is always inserted as text (never parsed as HTML), except the SVG
// that Mermaid draws (strict security level: labels sanitised by Mermaid itself).
"use strict";
(() => {
  const KEY = "hopflow.apiKey";
  const POLL_MS = 1500;
  const LIST_POLL_MS = 4000;
  const TERMINAL = new Set(["succeeded", "failed", "compensated", "cancelled", "dead"]);
  const STATUSES = ["running", "queued", "compensating", "succeeded", "failed", "compensated",
    "compensation_failed", "cancelled", "dead"];
  const NODE_STATES = ["done", "running", "waiting", "retrying", "failed", "compensated", "skipped",
    "cancelled", "pending"];

  const $ = (id) => document.getElementById(id);
  let key = sessionStorage.getItem(KEY) || "";
  let scopes = [];
  let timer = null;
  let route = 0; // bumped on every navigation: stale async renders drop their result

  // ------------------------------------------------------------------------------ helpers

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else if (k === "text") el.textContent = v;
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    return fill(el, ...children);
  }
  // Replace el's children (text stays text; null, undefined and false are left out).
  function fill(el, ...children) {
    el.replaceChildren();
    for (const c of children.flat(Infinity)) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }
  const badge = (state) => h("span", { class: `badge s-${state}`, "data-state": state }, state);
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "–");
  const clock = (iso) => (iso ? new Date(iso).toLocaleTimeString() : "");
  const json = (v) => JSON.stringify(v, null, 2);
  const operator = () => scopes.includes("operate");

  class ApiError extends Error {
    constructor(status, detail, doc) { super(detail); this.status = status; this.doc = doc; }
  }

  async function call(method, path, body) {
    const headers = { Authorization: `Bearer ${key}`, Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(new URL(`../${path}`, location.href), {
      method, headers, cache: "no-store", credentials: "omit",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let doc = null;
    try { doc = await r.json(); } catch { doc = null; }
    if (r.status === 401) {
      signOut("The server refused this key (401). Sign in again.");
      throw new ApiError(401, "unauthorized", doc);
    }
    if (!r.ok) throw new ApiError(r.status, (doc && doc.detail) || `${r.status} ${r.statusText}`, doc);
    return doc;
  }

  function stopPolling() { if (timer) { clearTimeout(timer); timer = null; } }
  function poll(fn, ms) {
    stopPolling();
    timer = setTimeout(async () => {
      timer = null;
      if (document.hidden) { poll(fn, ms); return; }
      await fn();
    }, ms);
  }

  let mermaidLoading = null;
  function loadMermaid() {
    if (window.mermaid) return Promise.resolve(window.mermaid);
    if (!mermaidLoading) {
      mermaidLoading = new Promise((resolve, reject) => {
        const s = h("script", { src: "mermaid.min.js" });
        s.onload = () => {
          window.mermaid.initialize({ startOnLoad: false, securityLevel: "strict", theme: "neutral",
            flowchart: { useMaxWidth: true } });
          resolve(window.mermaid);
        };
        s.onerror = () => reject(new Error("cannot load mermaid.min.js"));
        document.head.append(s);
      });
    }
    return mermaidLoading;
  }

  let drawCount = 0;
  // Draw `source` into `box` (unless it already shows it); returns {drawn id → <g> node element}.
  async function draw(box, source) {
    if (box.dataset.source !== source) {
      const mermaid = await loadMermaid();
      const { svg } = await mermaid.render(`hfgraph${++drawCount}`, source);
      box.innerHTML = svg; // Mermaid's own sanitised SVG (securityLevel strict)
      box.dataset.source = source;
    }
    const nodes = {};
    for (const g of box.querySelectorAll("g.node")) {
      const m = /(?:^|-)flowchart-(.+)-\d+$/.exec(g.id || "");
      if (m) { nodes[m[1]] = g; g.dataset.drawn = m[1]; }
    }
    return nodes;
  }

  function legend() {
    return h("div", { class: "legend" }, NODE_STATES.map(badge));
  }

  // ------------------------------------------------------------------------------ sign-in

  function signOut(message) {
    key = "";
    scopes = [];
    sessionStorage.removeItem(KEY);
    stopPolling();
    show(message);
  }

  async function signIn(candidate) {
    key = candidate;
    try {
      const who = await call("GET", "v1/whoami");
      scopes = who.scopes || ["read"];
      sessionStorage.setItem(KEY, key);
      return null;
    } catch (e) {
      key = "";
      if (e.status === 401) return "This key was refused.";
      if (e.status === 403) return "This key may not read (it lacks the read scope).";
      return `The server answered: ${e.message}`;
    }
  }

  function show(message) {
    const signedIn = Boolean(key);
    $("signin").hidden = signedIn;
    $("page").hidden = !signedIn;
    $("nav").hidden = !signedIn;
    $("signout").hidden = !signedIn;
    $("who").hidden = !signedIn;
    $("who").textContent = signedIn ? (operator() ? "read + operate" : "read only") : "";
    if (!signedIn) {
      fill($("page"));
      $("signin-error").textContent = message || "";
      $("key").focus();
      return;
    }
    render();
  }

  // ------------------------------------------------------------------------------ routing

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    const [path, query] = raw.split("?");
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    return { parts, query: new URLSearchParams(query || "") };
  }

  function render() {
    stopPolling();
    route += 1;
    const { parts, query } = parseHash();
    for (const a of document.querySelectorAll("#nav a")) {
      a.classList.toggle("active", a.dataset.nav === (parts[0] === "workflows" ? "workflows" : "executions"));
    }
    const page = $("page");
    fill(page);
    if (parts[0] === "executions" && parts[1]) return executionPage(page, parts[1], route);
    if (parts[0] === "workflows" && parts[1]) return workflowPage(page, parts[1], route);
    if (parts[0] === "workflows") return cataloguePage(page, route);
    return listPage(page, query, route);
  }

  // ------------------------------------------------------------------------------ executions list

  async function listPage(page, query, me) {
    const status = query.get("status") || "";
    const workflow = query.get("workflow") || "";
    const setFilter = (k, v) => {
      const q = new URLSearchParams(query);
      if (v) q.set(k, v); else q.delete(k);
      location.hash = `#/?${q}`;
    };
    const statusSel = h("select", { id: "f-status", onchange: (e) => setFilter("status", e.target.value) },
      h("option", { value: "" }, "any status"),
      STATUSES.map((s) => h("option", { value: s, selected: s === status }, s)));
    const wfSel = h("select", { id: "f-workflow", onchange: (e) => setFilter("workflow", e.target.value) },
      h("option", { value: "" }, "any workflow"));
    const openForm = h("form", {
      class: "inline", onsubmit: (e) => {
        e.preventDefault();
        const id = e.target.elements.id.value.trim();
        if (id) location.hash = `#/executions/${encodeURIComponent(id)}`;
      },
    }, h("input", { name: "id", placeholder: "execution id", "aria-label": "execution id" }),
      h("button", { type: "submit" }, "Open"));
    const chips = h("div", { class: "chips", id: "counts" });
    const notice = h("div");
    const body = h("tbody");
    const more = h("button", { type: "button", hidden: true }, "More");
    page.append(
      h("h1", {}, "Executions"),
      h("div", { class: "toolbar" }, statusSel, wfSel, h("span", { class: "spacer" }), openForm),
      chips, notice,
      h("div", { class: "card" }, h("table", { id: "executions" },
        h("thead", {}, h("tr", {}, ["execution", "workflow", "status", "started", "updated"].map((t) => h("th", {}, t)))),
        body), more));

    call("GET", "v1/workflows").then((doc) => {
      for (const w of doc.workflows) wfSel.append(h("option", { value: w.name, selected: w.name === workflow }, w.name));
    }).catch(() => {});

    let cursor = null;
    const row = (x) => h("tr", { class: "clickable", "data-id": x.execution_id,
      onclick: () => { location.hash = `#/executions/${encodeURIComponent(x.execution_id)}`; } },
      h("td", { class: "mono" }, h("a", { href: `#/executions/${encodeURIComponent(x.execution_id)}` }, x.execution_id)),
      h("td", {}, x.workflow || ""), h("td", {}, badge(x.status)),
      h("td", {}, when(x.started_at)), h("td", {}, when(x.updated_at)));

    async function load(append) {
      const q = new URLSearchParams({ limit: "50" });
      if (status) q.set("status", status);
      if (workflow) q.set("workflow", workflow);
      if (append && cursor) q.set("cursor", cursor);
      try {
        const [doc, counts] = await Promise.all([
          call("GET", `v1/executions?${q}`),
          append ? Promise.resolve(null) : call("GET", "v1/counts").catch(() => null),
        ]);
        if (me !== route) return;
        fill(notice);
        const rows = doc.executions.map(row);
        if (append) body.append(...rows); else fill(body, ...rows);
        if (!body.children.length) body.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "No executions match.")));
        cursor = doc.next_cursor;
        more.hidden = !cursor;
        if (counts) renderCounts(chips, counts, status, workflow, setFilter);
      } catch (e) {
        if (me !== route) return;
        if (e.status === 404 || e.status === 405) {
          fill(notice, h("div", { class: "notice" },
            "This server does not list executions (no GET /v1/executions). Open one by its id."));
        } else if (e.status !== 401) {
          fill(notice, h("div", { class: "notice bad" }, e.message));
        }
        return;
      }
      if (!append) poll(() => me === route && load(false), LIST_POLL_MS);
    }
    more.addEventListener("click", () => load(true));
    await load(false);
  }

  function renderCounts(chips, counts, status, workflow, setFilter) {
    const by = workflow ? (counts.workflow || {})[workflow] || {} : counts.status || {};
    const total = Object.values(by).reduce((a, b) => a + b, 0);
    fill(chips, 
      h("span", { class: `chip${status ? "" : " on"}`, onclick: () => setFilter("status", "") }, "all", h("b", {}, total)),
      STATUSES.filter((s) => by[s]).map((s) => h("span", {
        class: `chip${s === status ? " on" : ""}`, "data-status": s, onclick: () => setFilter("status", s),
      }, badge(s), h("b", {}, by[s]))));
  }

  // ------------------------------------------------------------------------------ one execution

  async function executionPage(page, eid, me) {
    const selected = { step: null };
    const head = h("div");
    const where = h("div");
    const errorBox = h("div");
    const graph = h("div", { class: "graph", id: "graph" });
    const stepBox = h("div", { class: "card", id: "step" });
    const comps = h("div");
    const timelineBox = h("div", { class: "card" });
    const io = h("div", { class: "card" });
    const stepsBox = h("div", { class: "card" });
    const actions = actionsPanel(eid, () => refresh());
    let drawnNodes = {};
    const select = (id) => {
      selected.step = id;
      renderStep(stepBox, last, selected);
      renderSteps(stepsBox, last, selected, select);
      paintSelected(drawnNodes, selected);
    };
    page.append(head, errorBox,
      h("div", { class: "row" },
        h("div", { class: "grow" }, where, h("div", { class: "card" }, h("h2", {}, "Graph"), graph, legend()),
          stepsBox, io),
        h("div", { class: "side" }, actions.el, stepBox, comps, timelineBox)));

    let last = null;
    async function refresh() {
      let view;
      try {
        view = await call("GET", `v1/executions/${encodeURIComponent(eid)}/view`);
      } catch (e) {
        if (me !== route || e.status === 401) return;
        fill(head, h("h1", {}, eid), h("div", { class: "notice bad", id: "load-error" }, e.message));
        if (e.status >= 500) poll(refresh, POLL_MS * 2);
        return;
      }
      if (me !== route) return;
      last = view;
      renderHead(head, view);
      renderWhere(where, view);
      renderError(errorBox, view);
      actions.update(view);
      renderComps(comps, view);
      renderTimeline(timelineBox, view);
      renderIO(io, view);
      try {
        const drawn = await draw(graph, view.mermaid);
        if (me !== route) return;
        drawnNodes = drawn;
        paint(drawn, view, selected, select);
      } catch (e) {
        fill(graph, h("p", { class: "error" }, `The graph cannot be drawn: ${e.message}`));
      }
      renderStep(stepBox, view, selected);
      renderSteps(stepsBox, view, selected, select);
      if (!TERMINAL.has(view.status)) poll(refresh, POLL_MS);
    }
    await refresh();
  }

  function renderHead(head, v) {
    const wf = v.workflow ? h("a", { href: `#/workflows/${encodeURIComponent(v.workflow)}` }, v.workflow) : "";
    fill(head, 
      h("h1", {}, v.execution_id, " ", h("span", { id: "status" }, badge(v.status))),
      h("div", { class: "card" }, h("dl", { class: "meta" },
        h("dt", {}, "workflow"), h("dd", {}, wf, h("span", { class: "muted mono" }, `  ${(v.graph || "").slice(0, 12)}`)),
        h("dt", {}, "started"), h("dd", {}, when(v.created_at)),
        h("dt", {}, "updated"), h("dd", {}, when(v.updated_at)),
        v.parent ? [h("dt", {}, "parent"), h("dd", {}, h("a", { href: `#/executions/${encodeURIComponent(v.parent.eid || "")}` }, v.parent.eid || ""))] : [])));
  }

  function renderWhere(box, v) {
    const live = Object.entries(v.nodes).filter(([, n]) => ["running", "waiting", "retrying"].includes(n.state));
    if (TERMINAL.has(v.status) || !live.length) { fill(box); return; }
    fill(box, h("div", { class: "card", id: "where" }, h("h2", {}, "Where it is"),
      h("ul", { class: "where" }, live.map(([id, n]) => h("li", {}, h("b", {}, id), " ", badge(n.state), " ", n.detail)))));
  }

  function renderError(box, v) {
    const e = v.error;
    if (!e) { fill(box); return; }
    fill(box, h("div", { class: "errorbox", id: "error" },
      h("div", {}, h("span", { class: "name" }, e.name || "error"), e.step ? ` at step ${e.step}` : ""),
      h("div", {}, e.message || "")));
  }

  // Mermaid writes a classDef's style (the compensation notes') inline, which no stylesheet beats:
  // a node that takes a state colour drops it (kept aside, so it comes back if the state goes).
  function restyle(g, state) {
    for (const shape of g.querySelectorAll("rect, polygon, path, circle, ellipse")) {
      if (shape.dataset.style === undefined) shape.dataset.style = shape.getAttribute("style") || "";
      if (state) shape.removeAttribute("style");
      else if (shape.dataset.style) shape.setAttribute("style", shape.dataset.style);
    }
    if (state) g.classList.add(`st-${state}`);
  }

  function paint(drawn, v, selected, onSelect) {
    for (const g of Object.values(drawn)) {
      g.classList.remove(...[...g.classList].filter((c) => c.startsWith("st-") || c === "current" || c === "selected"));
      restyle(g, null);
    }
    for (const [id, n] of Object.entries(v.nodes)) {
      const g = drawn[n.drawn];
      if (g) {
        restyle(g, n.state);
        if (n.branches && n.branches.length) g.classList.add("current");
        if (selected.step === id) g.classList.add("selected");
        g.dataset.step = id;
        g.dataset.state = n.state;
        const title = g.querySelector("title") || g.appendChild(document.createElementNS("http://www.w3.org/2000/svg", "title"));
        title.textContent = `${id}: ${n.state} — ${n.detail}`;
        if (!g.dataset.bound) {
          g.dataset.bound = "1";
          g.addEventListener("click", () => onSelect(g.dataset.step));
        }
      }
      const undo = n.undo && drawn[n.undo];
      if (undo) {
        const c = n.compensation;
        const st = c === "done" ? "compensated" : c === "failed" ? "failed" : c === "running" ? "running" : c === "retrying" ? "retrying" : null;
        if (st) restyle(undo, st);
        if (c === "running" || c === "retrying") undo.classList.add("current");
      }
      const join = n.join && drawn[n.join];
      if (join && (n.state === "done" || n.state === "compensated")) restyle(join, "done");
    }
    const end = drawn.end_ok;
    if (end && v.status === "succeeded") restyle(end, "done");
    const fail = drawn.end_fail;
    if (fail && v.status === "failed") restyle(fail, "failed");
  }

  function paintSelected(drawn, selected) {
    for (const g of Object.values(drawn)) g.classList.toggle("selected", g.dataset.step === selected.step && !!selected.step);
  }

  function renderStep(box, v, selected) {
    const id = selected.step;
    const n = id && v.nodes[id];
    if (!n) {
      fill(box, h("h2", {}, "Step"), h("p", { class: "muted" }, "Click a step in the graph to see what it was given and what it returned."));
      return;
    }
    const s = v.steps[id] || { config: null, inputs: [], outputs: [] };
    const values = (list) => list.map((o) => [o.item ? h("div", { class: "muted mono" }, o.item) : null, h("pre", {}, json(o.value))]);
    fill(box, 
      h("h2", {}, `Step ${id} `, badge(n.state)),
      h("p", {}, n.detail),
      n.error ? h("p", { class: "error" }, `${n.error.name}: ${n.error.message || ""}`) : null,
      h("div", { class: "muted" }, `${n.kind}${n.attempt ? ` · attempt ${n.attempt}` : ""}${n.runs ? ` · ${n.runs} run(s)` : ""}${n.compensation ? ` · compensation ${n.compensation}` : ""}`),
      h("h2", {}, "Given (as written)"), h("pre", {}, json(s.config)),
      (s.inputs || []).length ? [h("h2", {}, "Ran with (rendered)"), values(s.inputs)] : null,
      h("h2", {}, "Returned"),
      s.outputs.length ? values(s.outputs) : h("p", { class: "muted" }, "nothing stored"));
  }

  // Every step in graph order with its state: the graph's content for keyboards and screen readers.
  function renderSteps(box, v, selected, onSelect) {
    fill(box, h("h2", {}, "Steps"), h("table", { id: "steps" }, h("tbody", {}, Object.entries(v.nodes).map(([id, n]) =>
      h("tr", { class: `clickable${selected.step === id ? " selected" : ""}`, "data-step": id, "data-state": n.state },
        h("td", { class: "mono" }, h("button", { type: "button", class: "linkish", onclick: () => onSelect(id) }, id)),
        h("td", { class: "muted" }, n.kind), h("td", {}, badge(n.state)), h("td", {}, n.detail))))));
  }

  function renderComps(box, v) {
    if (!v.compensations.length) { fill(box); return; }
    fill(box, h("div", { class: "card", id: "compensations" },
      h("h2", {}, "Compensations (in the order they ran: newest first)"),
      h("ol", { class: "comps" }, v.compensations.map((c) => h("li", { "data-step": c.step },
        h("b", {}, c.step), " ", badge(c.status === "ok" ? "compensated" : "failed"),
        c.error ? ` ${c.error}: ${c.message}` : "", h("span", { class: "muted" }, ` ${clock(c.time)}`))))));
  }

  function renderTimeline(box, v) {
    const t = v.timeline;
    const old = box.querySelector(".timeline");
    const follow = !old || old.scrollTop + old.clientHeight >= old.scrollHeight - 4; // at the end: stay there
    const kept = old ? old.scrollTop : 0;
    const list = h("ol", { class: "timeline", id: "timeline" }, t.entries.map((e) => h("li", {
      class: `k-${e.kind} ${e.status === "error" ? "st-error" : ""}`,
    }, h("span", { class: "t" }, clock(e.time)), h("span", { class: "x" }, e.text, e.branch ? h("span", { class: "muted" }, ` [${e.branch}]`) : ""))));
    fill(box, h("h2", {}, "Timeline"),
      t.total > t.shown ? h("p", { class: "muted note" }, `the last ${t.shown} of ${t.total} entries`) : null, list);
    list.scrollTop = follow ? list.scrollHeight : kept;
  }

  function renderIO(box, v) {
    fill(box, h("h2", {}, "Input"), h("pre", { id: "input" }, json(v.input)),
      v.status === "succeeded" ? [h("h2", {}, "Output"), h("pre", { id: "output" }, json(v.output))] : null);
  }

  function actionsPanel(eid, after) {
    const msg = h("p", { class: "note", role: "status" });
    const compensate = h("input", { type: "checkbox", checked: true, id: "cancel-compensate" });
    const cancelBtn = h("button", { type: "button", class: "danger", id: "cancel" }, "Cancel execution");
    const resumeBtn = h("button", { type: "button", id: "resume" }, "Resume compensation");
    const evName = h("input", { name: "event", placeholder: "event name", required: true, id: "event-name" });
    const evKey = h("input", { name: "key", placeholder: "key", required: true, id: "event-key" });
    const evData = h("textarea", { name: "data", placeholder: "data (JSON, optional)", id: "event-data" });
    const evForm = h("form", { id: "event-form" }, h("h2", {}, "Send an event"),
      h("div", { class: "inline" }, h("label", {}, "event", evName), h("label", {}, "key", evKey)), evData,
      h("div", {}, h("button", { type: "submit", class: "primary" }, "Send event")));
    const cancelRow = h("div", { class: "inline" }, cancelBtn, h("label", {}, compensate, "compensate"));
    const el = h("div", { class: "card actions", id: "actions" }, h("h2", {}, "Operate"), cancelRow, resumeBtn, evForm, msg);
    let prefilled = false;
    let denied = false; // a 403 answered one of the buttons: this key may only read

    async function act(what, fn) {
      msg.className = "note";
      msg.textContent = `${what}…`;
      try {
        await fn();
        msg.textContent = `${what}: done`;
      } catch (e) {
        if (e.status === 403) {
          denied = true;
          for (const c of el.querySelectorAll("button, input, textarea")) c.disabled = true;
          msg.textContent = `${what}: this key may only read (403); sign in with an operate key to act.`;
        } else {
          msg.textContent = `${what}: ${e.message}`;
        }
        msg.className = "note error";
      }
      after();
    }
    cancelBtn.addEventListener("click", () => {
      if (!confirm(`Cancel execution ${eid}?`)) return;
      act("Cancel", () => call("POST", `v1/executions/${encodeURIComponent(eid)}/cancel`, { compensate: compensate.checked }));
    });
    resumeBtn.addEventListener("click", () => act("Resume", () => call("POST", `v1/executions/${encodeURIComponent(eid)}/resume`)));
    evForm.addEventListener("submit", (e) => {
      e.preventDefault();
      let data = null;
      if (evData.value.trim()) {
        try { data = JSON.parse(evData.value); } catch {
          msg.className = "note error";
          msg.textContent = "The event data is not valid JSON.";
          return;
        }
      }
      act("Send event", () => call("POST", `v1/events/${encodeURIComponent(evName.value.trim())}`, { key: evKey.value, data }));
    });

    function update(v) {
      el.hidden = !(operator() || denied) || TERMINAL.has(v.status);
      cancelRow.hidden = v.status !== "running" && v.status !== "queued";
      resumeBtn.hidden = v.status !== "compensation_failed";
      const waiting = Object.values(v.nodes).find((n) => n.state === "waiting" && n.wait && n.wait.wait === "event");
      evForm.hidden = v.status !== "running";
      if (waiting && !prefilled) {
        prefilled = true;
        evName.value = waiting.wait.event || "";
        evKey.value = waiting.wait.key || "";
      }
    }
    return { el, update };
  }

  // ------------------------------------------------------------------------------ catalogue

  async function cataloguePage(page, me) {
    const body = h("tbody");
    page.append(h("h1", {}, "Workflows"), h("div", { class: "card" }, h("table", { id: "workflows" },
      h("thead", {}, h("tr", {}, ["workflow", "validation", "steps", "graph", "file"].map((t) => h("th", {}, t)))), body)));
    let doc;
    try { doc = await call("GET", "v1/workflows"); } catch (e) {
      if (me === route && e.status !== 401) page.append(h("div", { class: "notice bad" }, e.message));
      return;
    }
    if (me !== route) return;
    fill(body, ...doc.workflows.map((w) => {
      const warnings = w.diagnostics.filter((d) => d.severity !== "error").length;
      const state = !w.valid ? "invalid" : warnings ? "warnings" : "valid";
      return h("tr", { "data-name": w.name },
        h("td", {}, h("a", { href: `#/workflows/${encodeURIComponent(w.name)}` }, w.name),
          w.description ? h("div", { class: "muted" }, w.description) : null, diagnostics(w.diagnostics)),
        h("td", {}, h("span", { class: `badge s-${state}` }, state === "warnings" ? `${warnings} warning(s)` : state)),
        h("td", {}, w.steps ?? "–"), h("td", { class: "mono" }, (w.graph || "–").slice(0, 12)),
        h("td", { class: "mono muted" }, w.file || ""));
    }));
    if (!doc.workflows.length) body.append(h("tr", {}, h("td", { colspan: 5, class: "muted" }, "This server has no workflows.")));
  }

  function diagnostics(list) {
    if (!list.length) return null;
    return h("ul", { class: "diag" }, list.map((d) => h("li", { class: d.severity },
      `${d.line}:${d.column} ${d.severity}: ${d.message} [${d.rule}]`)));
  }

  async function workflowPage(page, name, me) {
    let w;
    try { w = await call("GET", `v1/workflows/${encodeURIComponent(name)}`); } catch (e) {
      if (me === route && e.status !== 401) page.append(h("h1", {}, name), h("div", { class: "notice bad" }, e.message));
      return;
    }
    if (me !== route) return;
    const graph = h("div", { class: "graph", id: "graph" });
    const state = !w.valid ? "invalid" : "valid";
    const start = operator() && w.valid ? startForm(w.name, w.example_input) : null;
    page.append(
      h("h1", {}, w.name, " ", h("span", { class: `badge s-${state}` }, state)),
      w.description ? h("p", { class: "muted" }, w.description) : null,
      w.diagnostics.length ? h("div", { class: "card" }, h("h2", {}, "Validation"), diagnostics(w.diagnostics)) : null,
      h("div", { class: "row" },
        h("div", { class: "grow" }, h("div", { class: "card" }, h("h2", {}, "Graph"), graph)),
        h("div", { class: "side" }, start,
          h("div", { class: "card" }, h("h2", {}, "Steps"), h("table", {}, h("tbody", {}, w.nodes.map((n) =>
            h("tr", {}, h("td", { class: "mono" }, n.id), h("td", {}, n.kind), h("td", { class: "muted" }, n.line ? `line ${n.line}` : "")))))))));
    if (w.mermaid) {
      try { await draw(graph, w.mermaid); } catch (e) { fill(graph, h("p", { class: "error" }, e.message)); }
    } else {
      fill(graph, h("p", { class: "muted" }, "This file does not compile, so it has no graph."));
    }
  }

  function startForm(name, example) {
    const input = h("textarea", { id: "start-input", rows: 8 }, example === null || example === undefined ? "{}" : json(example));
    const msg = h("p", { class: "note", role: "status" });
    const form = h("form", { id: "start-form" }, h("h2", {}, "Start an execution"), h("label", { for: "start-input" }, "input (JSON)"), input,
      h("div", {}, h("button", { type: "submit", class: "primary" }, "Start")), msg);
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      let data;
      try { data = JSON.parse(input.value || "{}"); } catch { msg.className = "note error"; msg.textContent = "The input is not valid JSON."; return; }
      try {
        const r = await call("POST", "v1/executions", { workflow: name, input: data });
        location.hash = `#/executions/${encodeURIComponent(r.execution_id)}`;
      } catch (err) {
        msg.className = "note error";
        const first = err.doc && err.doc.errors && err.doc.errors[0];
        msg.textContent = first ? `${err.message} (${first.path || "/"}: ${first.message})` : err.message;
      }
    });
    return h("div", { class: "card actions" }, form);
  }

  // ------------------------------------------------------------------------------ start

  document.addEventListener("DOMContentLoaded", async () => {
    $("signin-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const problem = await signIn($("key").value.trim());
      $("key").value = "";
      show(problem);
    });
    $("signout").addEventListener("click", () => signOut(""));
    window.addEventListener("hashchange", () => { if (key) render(); });
    if (key) {
      const problem = await signIn(key);
      show(problem);
    } else {
      show("");
    }
  });
})();
