/* The compatibility matrix page. Everything it shows comes from matrix.json, embedded in the page.
 *
 * Safety: text from results (model, adapter and error strings …) only ever reaches the DOM through
 * textContent, attribute values set with setAttribute, and links that must be relative store keys.
 * No innerHTML, no string-built markup, no eval.
 */
(() => {
  "use strict";
  const started = performance.now();
  const $ = (sel, root = document) => root.querySelector(sel);
  const BASE_AXES = [["model", "model"], ["quantization", "quantization"], ["lora", "LoRA"], ["engine", "version"]];
  let KEY_AXES = BASE_AXES; // and the platform, in a matrix merged from runs on several platforms
  const CHANGE_KINDS = [["regressions", "Regressions", "▼"], ["fixes", "Fixes", "▲"], ["other", "Other changes", "◆"],
    ["added", "New combinations", "+"], ["removed", "Gone combinations", "−"]];

  /* ---------- helpers ---------- */
  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      node.append(kid instanceof Node ? kid : String(kid));
    }
    return node;
  }
  /* A link into the store: only relative keys, never a scheme (javascript:, data:, //host). */
  function storeLink(key, text) {
    if (typeof key !== "string" || !key || /^[a-z][a-z0-9+.-]*:/i.test(key) || key.startsWith("//") || key.includes("\\")) return null;
    return el("a", { href: key.split("/").map(encodeURIComponent).join("/") }, text);
  }
  const statusClass = (status) => "s-" + (/^[a-z_]+$/.test(status || "") ? status : "unknown");
  const fmtTime = (iso) => (iso ? String(iso).replace("T", " ").replace(/:\d\d(\.\d+)?(\+00:00|Z)$/, " UTC") : "?");
  const shortTime = (iso) => (iso ? String(iso).slice(5, 16).replace("T", " ") : "?");
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  const fmtNum = (v) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : String(Math.round(v * 1000) / 1000)) : String(v));

  /* ---------- data ---------- */
  async function loadMatrix() {
    const node = document.getElementById("matrix-data");
    const bytes = Uint8Array.from(atob(node.textContent.trim()), (ch) => ch.charCodeAt(0));
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return JSON.parse(await new Response(stream).text());
  }

  let M, cells, byId, at, legend, symbolOf, meaningOf, kindInfo, kindSymbol, causes, causeOfSig, sigs, hist, changes, changeOf, axisValues, rowAxes, colAxes, versionChangeOf, acrossVersions, multiPlatform, platformDiffOf;
  const comboKey = (row, lora, platform) => [row, lora, multiPlatform ? platform || "" : ""].join("\u0000");

  function index(matrix) {
    M = matrix;
    cells = M.cells || [];
    multiPlatform = (M.platforms || []).length > 1;
    KEY_AXES = multiPlatform ? [...BASE_AXES, ["platform", "platform"]] : BASE_AXES;
    byId = new Map(cells.map((c) => [c.cell_id, c]));
    at = new Map(cells.map((c) => [c.row + "\u0000" + c.column, c]));
    legend = M.legend || [];
    symbolOf = new Map(legend.map((l) => [l.status, l.symbol]));
    meaningOf = new Map(legend.map((l) => [l.status, l.meaning]));
    kindInfo = M.kinds || [];
    kindSymbol = new Map(kindInfo.map((k) => [k.kind, k.symbol]));
    causes = M.root_causes || [];
    causeOfSig = new Map();
    for (const r of causes) for (const s of r.variants || []) causeOfSig.set(s, r);
    sigs = new Map((M.signatures || []).map((g) => [g.signature, g]));
    hist = M.history || { runs: [], cells: {}, signature_since: {} };
    changes = M.changes || {};
    changeOf = new Map();
    for (const [kind] of CHANGE_KINDS) for (const ch of changes[kind] || []) if (kind !== "removed") changeOf.set(ch.cell_id, kind);
    // Along the versions of this run: per combination (row × LoRA) the first change, with the cell where it shows.
    const byAxes = new Map(cells.map((c) => [[comboKey(c.row, c.lora, c.platform), c.engine].join("\u0000"), c]));
    acrossVersions = (M.version_changes || []).map((v) => [v, byAxes.get([comboKey(v.row, v.lora, v.platform), v.engine].join("\u0000"))]);
    versionChangeOf = new Map(acrossVersions.map(([v]) => [comboKey(v.row, v.lora, v.platform), v]));
    // Combinations whose verdict differs by platform (row × LoRA): every cell of theirs is marked.
    platformDiffOf = new Map((M.platform_differences || []).map((d) => [d.row + "\u0000" + d.lora, d]));
    axisValues = {};
    for (const [axis] of KEY_AXES) axisValues[axis] = [...new Set(cells.map((c) => c[axis]))];
    rowAxes = new Map();
    colAxes = new Map();
    for (const c of cells) {
      if (!rowAxes.has(c.row)) rowAxes.set(c.row, c);
      if (!colAxes.has(c.column)) colAxes.set(c.column, c);
    }
    for (const c of cells) {
      c._hay = [c.model, c.quantization, c.lora, c.engine, c.vllm, c.status, c.error_type, c.error_message, c.frame,
        c.signature, c.kind, c.root_cause, c.cell_id, c.error_probe, ...(c.failed_probes || [])].filter(Boolean).join("\n").toLowerCase();
    }
  }

  /* ---------- state (kept in the URL hash, so a view can be linked and survives a live reload) ---------- */
  const state = { view: "matrix", statuses: new Set(), kinds: new Set(), axes: {}, q: "", cell: null, allHistory: false };
  // A failure shows its kind's symbol (refused, broken, wrong); every other status its own.
  const symOf = (c) => (c.status === "fail" && c.kind && kindSymbol.get(c.kind)) || symbolOf.get(c.status) || c.symbol || "?";

  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    state.view = ["matrix", "causes", "changes", "history", "bugs"].includes(params.get("view")) ? params.get("view") : "matrix";
    state.statuses = new Set((params.get("status") || "").split(",").filter(Boolean));
    state.kinds = new Set((params.get("kind") || "").split(",").filter(Boolean));
    state.q = params.get("q") || "";
    state.cell = params.get("cell") || null;
    state.allHistory = params.get("all") === "1";
    for (const [axis] of KEY_AXES) {
      const raw = params.getAll(axis);
      state.axes[axis] = raw.length ? new Set(raw) : null;
    }
  }

  function writeHash() {
    const params = new URLSearchParams();
    if (state.view !== "matrix") params.set("view", state.view);
    if (state.statuses.size) params.set("status", [...state.statuses].join(","));
    if (state.kinds.size) params.set("kind", [...state.kinds].join(","));
    if (state.q) params.set("q", state.q);
    for (const [axis] of KEY_AXES) if (state.axes[axis]) for (const v of state.axes[axis]) params.append(axis, v);
    if (state.allHistory) params.set("all", "1");
    if (state.cell) params.set("cell", state.cell);
    const hash = params.toString();
    history.replaceState(null, "", hash ? "#" + hash : location.pathname + location.search);
  }

  function filtering() {
    return state.statuses.size > 0 || state.kinds.size > 0 || state.q.trim() !== "" || KEY_AXES.some(([a]) => state.axes[a]);
  }
  function axesMatch(c) {
    return KEY_AXES.every(([a]) => !state.axes[a] || state.axes[a].has(c[a]));
  }
  function matches(c) {
    if (!axesMatch(c)) return false;
    if (state.statuses.size && !state.statuses.has(c.status)) return false;
    if (state.kinds.size && !state.kinds.has(c.kind)) return false;
    const tokens = state.q.toLowerCase().split(/\s+/).filter(Boolean);
    return tokens.every((t) => c._hay.includes(t));
  }

  /* ---------- header: meta, summary bar, legend ---------- */
  function renderHeader() {
    const meta = $("#meta");
    meta.replaceChildren(el("span", {},
      "job ", el("b", { text: M.job_name }), (M.runs || []).length > 1 ? " · runs " : " · run ", el("code", { text: M.run_id }),
      multiPlatform ? [" · platforms ", el("b", { text: M.platforms.join(" | ") })] : "",
      " · started ", fmtTime(M.started_at),
      M.finished_at ? [" · finished ", fmtTime(M.finished_at)] : el("span", { class: "running", text: " · still running" }),
      " · ", plural(cells.length, "cell"),
      " · generated ", fmtTime(M.generated_at)));
    document.title = `farm · ${M.job_name} · ${M.run_id}`;
    const counts = M.counts || {};
    const total = cells.length || 1;
    const bar = el("div", { class: "bar", role: "img", "aria-label": legend.filter((l) => counts[l.status]).map((l) => `${counts[l.status]} ${l.status}`).join(", ") });
    const chips = $("#status-filter");
    chips.replaceChildren();
    for (const l of legend) {
      const n = counts[l.status] || 0;
      if (!n) continue;
      const seg = el("span", { class: "seg " + statusClass(l.status), title: `${n} ${l.status}` });
      seg.style.flexGrow = String(n / total);
      bar.append(seg);
      chips.append(el("button", {
        type: "button", class: "chip " + statusClass(l.status), "data-status": l.status, "aria-pressed": "false",
        title: `${l.meaning} — click to show only these (several may be chosen)`, onclick: () => toggleStatus(l.status),
      }, el("span", { class: "sym", text: l.symbol }), ` ${l.status.replace("_", " ")} `, el("b", { text: n })));
    }
    const kindCounts = M.kind_counts || {};
    for (const k of kindInfo) {
      const n = kindCounts[k.kind] || 0;
      if (!n) continue;
      chips.append(el("button", {
        type: "button", class: "chip k-" + k.kind, "data-kind": k.kind, "aria-pressed": "false",
        title: `${k.meaning} — click to show only failures of this kind`, onclick: () => toggleKind(k.kind),
      }, el("span", { class: "sym", text: k.symbol }), ` ${k.kind} `, el("b", { text: n })));
    }
    $("#summary").replaceChildren(bar);
    const legendBox = $("#legend");
    legendBox.replaceChildren(el("h3", { text: "Legend" }));
    const list = el("ul");
    for (const l of legend) {
      list.append(el("li", {}, el("span", { class: "mark " + statusClass(l.status), text: l.symbol }),
        el("b", { text: l.status.replace("_", " ") }), " — ", l.meaning));
    }
    for (const k of kindInfo) {
      list.append(el("li", { class: "kind" }, el("span", { class: "mark k-" + k.kind, text: k.symbol }),
        el("b", { text: "fail: " + k.kind }), " — ", k.meaning));
    }
    list.append(el("li", {}, el("span", { class: "mark chg-regressions", text: "" }), el("b", { text: "▼ regression" }), " — worse than the previous run of this job"));
    list.append(el("li", {}, el("span", { class: "mark chg-fixes", text: "" }), el("b", { text: "▲ fix" }), " — better than the previous run"));
    if (multiPlatform) {
      list.append(el("li", {}, el("span", { class: "mark plat-diff", text: "" }), el("b", { text: "⇄ platform" }),
        " — this combination's verdict differs by platform (Changes lists them)"));
    }
    legendBox.append(list);
  }

  /* ---------- filters ---------- */
  function toggleStatus(status) {
    if (state.statuses.has(status)) state.statuses.delete(status);
    else state.statuses.add(status);
    update();
  }

  function toggleKind(kind) {
    if (state.kinds.has(kind)) state.kinds.delete(kind);
    else state.kinds.add(kind);
    update();
  }

  function renderAxisFilters() {
    const box = $("#axis-filters");
    box.replaceChildren();
    for (const [axis, label] of KEY_AXES) {
      const values = axisValues[axis];
      const summary = el("summary", { "data-axis": axis });
      const list = el("div", { class: "opts" });
      for (const value of values) {
        const input = el("input", { type: "checkbox", value, "data-axis": axis });
        input.addEventListener("change", () => {
          const chosen = new Set([...list.querySelectorAll("input:checked")].map((i) => i.value));
          state.axes[axis] = chosen.size === values.length ? null : chosen;
          update();
        });
        list.append(el("label", {}, input, " ", el("span", { text: value })));
      }
      const setAll = (on) => {
        state.axes[axis] = on ? null : new Set();
        update();
      };
      const find = values.length > 8 ? el("input", { type: "search", class: "find", placeholder: `find a ${label}…`, "aria-label": `find a ${label}` }) : null;
      if (find) {
        find.addEventListener("input", () => {
          const t = find.value.toLowerCase();
          for (const lab of list.children) lab.hidden = !lab.textContent.toLowerCase().includes(t);
        });
      }
      box.append(el("details", { class: "axis", "data-axis": axis }, summary,
        el("div", { class: "pop" },
          el("div", { class: "all" },
            el("button", { type: "button", onclick: () => setAll(true), text: "all" }),
            el("button", { type: "button", onclick: () => setAll(false), text: "none" })),
          find, list)));
    }
  }

  function syncFilterControls() {
    $("#q").value = state.q;
    for (const chip of document.querySelectorAll("#status-filter .chip")) {
      const on = chip.dataset.kind ? state.kinds.has(chip.dataset.kind) : state.statuses.has(chip.dataset.status);
      chip.setAttribute("aria-pressed", String(on));
    }
    for (const [axis, label] of KEY_AXES) {
      const chosen = state.axes[axis];
      const total = axisValues[axis].length;
      const summary = $(`#axis-filters summary[data-axis="${axis}"]`);
      summary.textContent = `${label}: ${chosen ? `${chosen.size} of ${total}` : `all ${total}`}`;
      summary.classList.toggle("active", Boolean(chosen));
      for (const input of document.querySelectorAll(`#axis-filters input[type=checkbox][data-axis="${axis}"]`)) {
        input.checked = !chosen || chosen.has(input.value);
      }
    }
    $("#clear").hidden = !filtering();
  }

  /* ---------- the grid ---------- */
  let gridCells = []; // [td, cell] pairs, in order
  let rowEls = new Map(); // row label → tr
  let colEls = []; // column index → th (second header row)
  let groupEls = []; // [th, [column indexes]]
  let platformEls = []; // the same, one per platform (a matrix of runs on several platforms)

  function renderGrid() {
    const table = $("#grid");
    const rows = M.rows || [];
    const cols = M.columns || [];
    table.classList.toggle("roomy", cols.length <= 10);
    // Two header rows: the axis that stays constant over runs of neighbouring columns on top (the version,
    // when the matrix groups its columns per engine; else the adapter), the other one below.
    const axesOf = (column) => colAxes.get(column) || { lora: column, engine: "", platform: "" };
    // In a matrix of runs on several platforms, the platform is the top level: groups never span two.
    const onPlatform = (platform, value) => (multiPlatform ? (platform || "") + "\u0000" : "") + value;
    const groupValue = (axes, axis) => onPlatform(axes.platform, axes[axis]);
    const runs = (axis) => cols.filter((column, i) => i === 0 || groupValue(axesOf(cols[i - 1]), axis) !== groupValue(axesOf(column), axis)).length;
    const [top, below] = runs("engine") <= runs("lora") ? ["engine", "lora"] : ["lora", "engine"];
    const loraLabel = (lora) => (lora === "none" ? "no LoRA" : lora);
    const measured = new Map((M.engines || []).map((g) => [onPlatform(g.platform, g.engine), (g.vllm || []).join(", ")]));
    const corner = el("th", { class: "corner", rowspan: multiPlatform ? 3 : 2, scope: "col" },
      el("span", { class: "c-rows", text: "model · quantization" }),
      el("span", { class: "c-cols", text: (multiPlatform ? "platform · " : "") + (top === "engine" ? "version · LoRA" : "LoRA · version") }));
    const head0 = multiPlatform ? el("tr", { class: "platforms" }, corner) : null;
    const head1 = multiPlatform ? el("tr") : el("tr", {}, corner);
    const head2 = el("tr");
    groupEls = [];
    colEls = [];
    platformEls = [];
    cols.forEach((column, i) => {
      const axes = axesOf(column);
      if (head0) {
        const lastPlatform = platformEls[platformEls.length - 1];
        if (lastPlatform && lastPlatform.value === axes.platform) lastPlatform.cols.push(i);
        else {
          const th = el("th", { class: "platform", scope: "colgroup", title: axes.platform || "" }, el("span", { text: axes.platform || "unknown platform" }));
          head0.append(th);
          platformEls.push({ th, value: axes.platform, cols: [i] });
        }
      }
      const last = groupEls[groupEls.length - 1];
      if (last && last.value === groupValue(axes, top) && last.cols[last.cols.length - 1] === i - 1) {
        last.cols.push(i);
      } else {
        const vllm = top === "engine" ? measured.get(onPlatform(axes.platform, axes.engine)) : "";
        const th = el("th", { class: "group", scope: "colgroup", title: vllm ? `${axes.engine}: vLLM ${vllm}` : null },
          el("span", { text: top === "engine" ? axes.engine : loraLabel(axes.lora) }),
          vllm && vllm !== axes.engine.replace(/^v/, "") ? el("small", { text: " " + vllm }) : "");
        head1.append(th);
        groupEls.push({ th, value: groupValue(axes, top), cols: [i] });
      }
      const th = el("th", { class: "col", scope: "col", title: column }, el("span", { text: below === "engine" ? axes.engine : loraLabel(axes.lora) }));
      if (groupEls[groupEls.length - 1].cols[0] === i) th.classList.add("first");
      head2.append(th);
      colEls.push(th);
    });
    for (const g of groupEls) g.th.colSpan = g.cols.length;
    for (const p of platformEls) p.th.colSpan = p.cols.length;
    const thead = el("thead", {}, ...(head0 ? [head0] : []), head1, head2);
    const tbody = el("tbody");
    gridCells = [];
    rowEls = new Map();
    let lastModel = null;
    for (const row of rows) {
      const axes = rowAxes.get(row) || { model: row, quantization: "" };
      const tr = el("tr");
      if (axes.model !== lastModel) tr.classList.add("first");
      tr.append(el("th", { scope: "row", title: row }, el("div", { class: "rh" }, el("span", { class: "m", text: axes.model }), " ", el("span", { class: "qz", text: axes.quantization }))));
      lastModel = axes.model;
      cols.forEach((column, i) => {
        const c = at.get(row + "\u0000" + column);
        if (!c) {
          const td = el("td", { class: "empty", title: "not part of this job" });
          tr.append(td);
          gridCells.push([td, null, i]);
          return;
        }
        const change = changeOf.get(c.cell_id);
        const byPlatform = platformDiffOf.has(c.row + "\u0000" + c.lora);
        const td = el("td", {
          class: `cell ${statusClass(c.status)}${c.kind ? " k-" + c.kind : ""}${change ? " chg-" + change : ""}${byPlatform ? " plat-diff" : ""}${colEls[i].classList.contains("first") ? " first" : ""}`,
          tabindex: 0, role: "button", "data-id": c.cell_id, "data-kind": c.kind || "",
          title: cellTitle(c, change),
        }, el("span", { class: "sym", text: symOf(c) }));
        if (table.classList.contains("roomy")) {
          td.append(el("span", { class: "word", text: " " + (c.kind || c.status.replace("_", " ")) }));
          if (c.root_cause || c.signature) td.append(el("small", { text: " " + (c.root_cause || c.signature).slice(0, 6) }));
        }
        tr.append(td);
        gridCells.push([td, c, i]);
      });
      tbody.append(tr);
      rowEls.set(row, tr);
    }
    table.replaceChildren(thead, tbody);
    table.addEventListener("click", (ev) => {
      const td = ev.target.closest("td.cell");
      if (td) openCell(td.dataset.id);
    });
    table.addEventListener("keydown", (ev) => {
      const td = ev.target.closest("td.cell");
      if (td && (ev.key === "Enter" || ev.key === " ")) {
        ev.preventDefault();
        openCell(td.dataset.id);
      }
    });
  }

  function cellTitle(c, change) {
    const lines = [`${c.model} · ${c.quantization} / ${c.lora} · ${c.engine}${multiPlatform && c.platform ? ` · ${c.platform}` : ""}`,
      `${symOf(c)} ${c.status}${c.kind ? ` (${c.kind})` : ""}${c.vllm ? ` on vLLM ${c.vllm}` : ""}`];
    if (c.error_type) lines.push(`${c.error_type}${c.frame ? ` at ${c.frame}` : ""}${c.root_cause ? ` [${c.root_cause}]` : c.signature ? ` [${c.signature}]` : ""}`);
    else if ((c.failed_probes || []).length) lines.push(`failed probes: ${c.failed_probes.join(", ")}`);
    if (change === "regressions") lines.push("▼ regression since the previous run");
    if (change === "fixes") lines.push("▲ fixed since the previous run");
    if (platformDiffOf.has(c.row + "\u0000" + c.lora)) lines.push("⇄ the verdict differs by platform");
    return lines.join("\n");
  }

  function filterGrid() {
    const active = filtering();
    const rowHit = new Map();
    const colHit = new Array((M.columns || []).length).fill(false);
    const rowAllowed = (row) => {
      const a = rowAxes.get(row);
      return !a || ((!state.axes.model || state.axes.model.has(a.model)) && (!state.axes.quantization || state.axes.quantization.has(a.quantization)));
    };
    const colAllowed = (i) => {
      const a = colAxes.get(M.columns[i]);
      return !a || ["lora", "engine", "platform"].every((axis) => !state.axes[axis] || state.axes[axis].has(a[axis]));
    };
    let shown = 0;
    for (const [td, c, i] of gridCells) {
      if (!c) continue;
      const hit = matches(c);
      td.classList.toggle("dim", active && !hit);
      if (hit) {
        shown++;
        rowHit.set(c.row, true);
        colHit[i] = true;
      }
    }
    const colVisible = colHit.map((hit, i) => colAllowed(i) && (hit || !active));
    for (const [row, tr] of rowEls) tr.hidden = !(rowAllowed(row) && (rowHit.get(row) || !active));
    for (const [td, , i] of gridCells) td.hidden = !colVisible[i];
    colEls.forEach((th, i) => (th.hidden = !colVisible[i]));
    for (const g of [...groupEls, ...platformEls]) {
      const n = g.cols.filter((i) => colVisible[i]).length;
      g.th.hidden = n === 0;
      if (n) g.th.colSpan = n;
    }
    const rowsShown = [...rowEls.values()].filter((tr) => !tr.hidden).length;
    const colsShown = colVisible.filter(Boolean).length;
    $("#shown").textContent = active
      ? `${shown} of ${cells.length} cells match · ${rowsShown} × ${colsShown} shown`
      : `${(M.rows || []).length} × ${(M.columns || []).length} · ${plural(cells.length, "cell")}`;
    $("#grid-wrap").classList.toggle("nothing", shown === 0);
  }

  /* ---------- cell detail ---------- */
  function openCell(id) {
    state.cell = byId.has(id) ? id : null;
    writeHash();
    renderDetail();
  }

  function renderDetail() {
    const aside = $("#detail");
    for (const td of document.querySelectorAll("#grid td.sel")) td.classList.remove("sel");
    const c = state.cell && byId.get(state.cell);
    document.body.classList.toggle("with-detail", Boolean(c));
    if (!c) {
      aside.hidden = true;
      aside.replaceChildren();
      return;
    }
    const td = document.querySelector(`#grid td[data-id="${CSS.escape(c.cell_id)}"]`);
    if (td) td.classList.add("sel");
    const close = el("button", { type: "button", class: "close", "aria-label": "close", text: "×", onclick: () => openCell(null) });
    const parts = [close,
      el("p", { class: "crumbs" }, el("span", { text: c.model }), " · ", el("span", { text: c.quantization }), " / ",
        el("span", { text: c.lora === "none" ? "no LoRA" : c.lora }), " · ", el("span", { text: c.engine })),
      el("h2", { class: "status " + statusClass(c.status) }, el("span", { class: "sym", text: symOf(c) }), " ", c.status.replace("_", " "), c.kind ? ` · ${c.kind}` : "",
        el("span", { class: "why", text: meaningOf.get(c.status) || "" })),
    ];
    const change = changeOf.get(c.cell_id);
    if (change && change !== "added") {
      const ch = (changes[change] || []).find((x) => x.cell_id === c.cell_id);
      parts.push(el("p", { class: "change chg-" + change },
        change === "regressions" ? "▼ Regression" : change === "fixes" ? "▲ Fixed" : "◆ Changed",
        ` since the previous run (${changes.previous_run || "?"}): ${ch.before} → ${ch.after}`,
        ch.before_vllm !== ch.after_vllm && (ch.before_vllm || ch.after_vllm) ? `, vLLM ${ch.before_vllm || "?"} → ${ch.after_vllm || "?"}` : ""));
    }
    const facts = el("dl", { class: "facts" });
    const fact = (k, ...v) => facts.append(el("dt", { text: k }), el("dd", {}, ...v));
    fact("vLLM", c.vllm || "unknown");
    if (c.platform) fact("platform", c.platform);
    fact("attempt", String(c.attempt || 1));
    fact("cell", el("code", { text: c.cell_id }));
    const links = [storeLink(c.result_key, "result JSON"), storeLink(c.log_key, "log")].filter(Boolean);
    fact("files", links.length ? links.flatMap((a, i) => (i ? [" · ", a] : [a])) : "none (the cell has no result yet)");
    parts.push(facts);
    parts.push(historyStrip(c));
    const across = versionChangeOf.get(comboKey(c.row, c.lora, c.platform));
    if (across) {
      parts.push(el("p", { class: "across" }, el("b", { text: "Across versions: " }), "this combination's outcome first changed at ",
        el("b", { text: across.engine }), ` (${across.previous_engine}: ${across.before} → ${across.engine}: ${across.after})`,
        across.changes > 1 ? `; it changes ${across.changes} times along the versions` : ""));
    }
    const otherPlatforms = platformDiffOf.get(c.row + "\u0000" + c.lora);
    if (otherPlatforms) {
      parts.push(el("p", { class: "across plat" }, el("b", { text: "Across platforms: " }),
        `this combination's verdict differs by platform${otherPlatforms.release ? ` on vLLM ${otherPlatforms.release}` : " (no release measured on both: each platform's newest)"}: `,
        ...otherPlatforms.outcomes.flatMap((o, i) => [i ? "; " : "", el("b", { text: o.platform }), ` ${o.status}${o.kind ? "/" + o.kind : ""} on ${o.engine}${o.vllm ? ` (vLLM ${o.vllm})` : ""}`])));
    }
    if (c.error_type || c.error_message) {
      const sig = c.signature && sigs.get(c.signature);
      parts.push(el("h3", { text: "Failure" }));
      parts.push(el("p", { class: "error" }, el("b", { text: c.error_type || "error" }),
        c.frame ? [" at ", el("code", { text: c.frame })] : "",
        c.error_probe ? [" in probe ", el("code", { text: c.error_probe })] : c.error_type && c.signature ? " during engine build" : "",
        el("br"), el("span", { class: "msg", text: c.error_message || "" }),
        c.error_wrapper ? el("span", { class: "wrapper" }, el("br"), "from the engine's log; the caller saw: ", el("code", { text: c.error_wrapper })) : ""));
      const cause = c.signature && causeOfSig.get(c.signature);
      if (cause) {
        const kind = kindInfo.find((k) => k.kind === cause.kind);
        parts.push(el("p", { class: "kind-line" }, el("span", { class: "mark k-" + cause.kind, text: kind ? kind.symbol : "" }),
          el("b", { text: cause.kind }), kind ? ` — ${kind.meaning}` : ""));
      }
      if (c.signature) {
        const since = (hist.signature_since || {})[c.signature];
        parts.push(el("p", {}, cause ? ["root cause ", el("a", { href: "#", class: "sig", onclick: (ev) => { ev.preventDefault(); showSignature(c.signature); } }, el("code", { text: cause.root_cause })),
          ` breaks ${plural(cause.cells.length, "cell")}; its variant `] : "signature ",
          el("a", { href: "#", class: "sig", onclick: (ev) => { ev.preventDefault(); showSignature(c.signature); } }, el("code", { text: c.signature })),
          sig ? ` breaks ${plural(sig.cells.length, "cell")}` : "", since ? `, since run ${since}` : ""));
      }
      if (sig && sig.traceback_tail) parts.push(el("details", { class: "tb", open: true }, el("summary", { text: "traceback (tail)" }), el("pre", { text: sig.traceback_tail })));
    }
    if (c.log_excerpt) parts.push(el("details", { class: "tb", open: true }, el("summary", { text: "log (last lines)" }), el("pre", { text: c.log_excerpt })));
    const probes = c.probe_results || [];
    if (probes.length) {
      const table = el("table", { class: "probes" }, el("thead", {}, el("tr", {}, el("th", { text: "probe" }), el("th", { text: "" }), el("th", { text: "detail" }), el("th", { text: "metrics" }))));
      const body = el("tbody");
      for (const p of probes) {
        const metrics = Object.entries(p.metrics || {}).map(([k, v]) => el("span", { class: "metric" }, el("span", { text: k }), " ", el("b", { text: fmtNum(v) })));
        const [cls, mark, word] = p.skipped ? ["skip", "–", "skipped: could not judge"] : p.passed ? ["ok", "✓", "passed"] : ["bad", "✗", "failed"];
        body.append(el("tr", {}, el("td", {}, el("code", { text: p.name })),
          el("td", { class: cls, text: mark, title: word }),
          el("td", { text: p.detail || "" }), el("td", {}, metrics)));
        if (p.evidence && Object.keys(p.evidence).length) {
          body.append(el("tr", { class: "evidence" }, el("td", { colspan: 4 },
            el("details", {}, el("summary", { text: `evidence of ${p.name}` }), el("pre", { text: JSON.stringify(p.evidence, null, 1) })))));
        }
      }
      table.append(body);
      parts.push(el("h3", { text: "Probes" }), table);
    } else if (Object.keys(c.probes || {}).length) {
      parts.push(el("h3", { text: "Probes" }), el("p", {}, Object.entries(c.probes).map(([k, ok]) => el("span", { class: ok ? "ok" : "bad", text: `${ok ? "✓" : "✗"} ${k}  ` }))));
    }
    const timings = Object.entries(c.timings || {});
    if (timings.length || c.peak_rss_mb) {
      parts.push(el("h3", { text: "Timings and memory" }), el("p", { class: "metrics" },
        timings.map(([k, v]) => el("span", { class: "metric" }, el("span", { text: k }), " ", el("b", { text: fmtNum(v) + " s" }))),
        c.peak_rss_mb ? el("span", { class: "metric" }, el("span", { text: "peak RSS" }), " ", el("b", { text: Math.round(c.peak_rss_mb) + " MiB" })) : ""));
    }
    const env = c.env_id && (M.envs || {})[c.env_id];
    parts.push(el("h3", { text: "Environment" }));
    if (env) {
      const dl = el("dl", { class: "facts env" });
      for (const [k, v] of Object.entries(env)) {
        if (v === null || v === undefined || (Array.isArray(v) && !v.length)) continue;
        dl.append(el("dt", { text: k }), el("dd", { text: Array.isArray(v) ? v.join(" ") : String(v) }));
      }
      parts.push(dl);
      // The driver knows the node of a cell that died; the versions only the cell's own process could measure.
      if (!env.vllm && !env.python) parts.push(el("p", { class: "muted", text: "versions not measured: the cell's process ended before it could report them" }));
    } else {
      parts.push(el("p", { class: "muted", text: "not measured: the cell's process ended before it could report its environment" }));
    }
    aside.replaceChildren(...parts);
    aside.hidden = false;
    aside.scrollTop = 0;
  }

  function historyStrip(c) {
    const strip = (hist.cells || {})[c.cell_id];
    const runs = hist.runs || [];
    if (!strip || !runs.length) return el("p", { class: "muted", text: "no history" });
    const marks = [...strip];
    const box = el("div", { class: "strip", role: "list", "aria-label": "last runs of this job, oldest first" });
    const statusOfSymbol = new Map(legend.map((l) => [l.symbol, l.status]));
    marks.forEach((sym, i) => {
      const run = runs[i] || {};
      const status = sym === " " ? null : statusOfSymbol.get(sym) || "unknown";
      const versions = (run.versions || {})[c.engine];
      const label = `${run.run_id} · ${fmtTime(run.started_at)}${versions ? ` · vLLM ${versions.join(", ")}` : ""} · ${status || "not in this run"}`;
      const mark = el("span", { class: `run ${status ? statusClass(status) : "absent"}${i === marks.length - 1 ? " now" : ""}`, role: "listitem", title: label, text: status ? sym : "–" });
      const link = storeLink(run.matrix_key, mark);
      box.append(link ? link : mark);
    });
    let since = marks.length - 1;
    while (since > 0 && marks[since - 1] === marks[marks.length - 1]) since--;
    const streak = marks.length - since;
    const first = runs[since] || {};
    const text = streak === marks.length && marks.length < (hist.window || 0)
      ? `${c.status.replace("_", " ")} in every run on record (${marks.length})`
      : `${c.status.replace("_", " ")} since ${first.run_id} (${shortTime(first.started_at)}), ${plural(streak, "run")}`;
    return el("div", { class: "history" }, el("h3", { text: `History — last ${plural(marks.length, "run")}` }), box, el("p", { class: "muted", text }));
  }

  /* ---------- root causes ---------- */
  let sigEls = new Map();
  function renderCauses() {
    const view = $("#view-causes");
    sigEls = new Map();
    const parts = [el("p", { class: "intro", text: "Each root cause (exception type, message with class names masked, innermost vLLM function) with the cells it breaks: one root cause is one bug report. Its variants are the signatures it was seen with: the same bug with another class in the message, on another line or in another file." })];
    let shown = 0;
    const card = (g, hit) => {
      const since = (hist.signature_since || {})[g.signature];
      return el("div", { class: "variant", "data-signature": g.signature },
        el("header", {}, el("code", { class: "sigid", text: g.signature }), " ", g.frame ? ["at ", el("code", { text: g.frame })] : "",
          (g.vllm || []).length ? el("span", { class: "muted", text: ` · vLLM ${g.vllm.join(", ")}` }) : "",
          el("span", { class: "count", text: `${hit.length}${hit.length !== g.cells.length ? ` of ${g.cells.length}` : ""} ${hit.length === 1 ? "cell" : "cells"}` })),
        el("p", { class: "msg", text: g.message }),
        since ? el("p", { class: "muted", text: `since run ${since}${sinceTime(since)}` }) : "",
        cellChips(hit),
        g.traceback_tail ? el("details", { class: "tb" }, el("summary", { text: "traceback (tail)" }), el("pre", { text: g.traceback_tail })) : "");
    };
    for (const r of causes) {
      const hit = r.cells.map((id) => byId.get(id)).filter((c) => c && matches(c));
      if (!hit.length) continue;
      shown++;
      const kind = kindInfo.find((k) => k.kind === r.kind);
      const article = el("article", { class: "cause", "data-root-cause": r.root_cause, "data-kind": r.kind || "" },
        el("header", {}, el("span", { class: "mark k-" + r.kind, title: kind ? kind.meaning : "", text: kind ? kind.symbol : "" }),
          el("code", { class: "sigid", text: r.root_cause }), " ", el("b", { text: r.kind || "" }), " · ", el("b", { text: r.error_type }),
          r.function ? [" in ", el("code", { text: r.function })] : "",
          el("span", { class: "count", text: `breaks ${hit.length}${hit.length !== r.cells.length ? ` of ${r.cells.length}` : ""} ${hit.length === 1 ? "cell" : "cells"}` })),
        el("p", { class: "msg", text: r.message }),
        spread(hit),
        (r.vllm || []).length ? el("p", { class: "muted", text: `vLLM ${r.vllm.join(", ")} · ${plural((r.variants || []).length, "variant")}` }) : "",
        el("p", { class: "repro" }, "reproduce it with vLLM alone: ", el("code", { text: `farm repro ${r.root_cause} --run ${M.run_id}` }),
          " writes a standalone repro.py for a vLLM issue"));
      for (const signature of r.variants || []) {
        const g = sigs.get(signature);
        const mine = g ? g.cells.map((id) => byId.get(id)).filter((c) => c && matches(c)) : [];
        if (!g || !mine.length) continue;
        article.append(card(g, mine));
        sigEls.set(signature, article);
      }
      parts.push(article);
    }
    const others = (M.signatures || []).filter((g) => !causeOfSig.has(g.signature));
    const otherCards = [];
    for (const g of others) {
      const hit = g.cells.map((id) => byId.get(id)).filter((c) => c && matches(c));
      if (!hit.length) continue;
      shown++;
      const article = el("article", { class: "cause", "data-signature": g.signature },
        el("header", {}, el("b", { text: g.error_type })), card(g, hit));
      sigEls.set(g.signature, article);
      otherCards.push(article);
    }
    if (otherCards.length) {
      parts.push(el("h3", { text: "Not verdicts" }), el("p", { class: "intro", text: "Exceptions that say nothing about vLLM: the farm's own code failed, or the cell could not be run." }), ...otherCards);
    }
    const unsigned = cells.filter((c) => !c.signature && ["fail", "crash", "timeout", "infra_error", "env_error"].includes(c.status) && matches(c));
    if (unsigned.length) {
      const groups = new Map();
      for (const c of unsigned) {
        const key = c.status + (c.failed_probes && c.failed_probes.length ? ` — probe ${c.failed_probes.join(", ")} failed` : c.error_type && c.error_type !== c.status ? ` — ${c.error_type}` : "");
        if (!groups.has(key)) groups.set(key, []);
        groups.get(key).push(c);
      }
      parts.push(el("h3", { text: "Failures without a signature" }), el("p", { class: "intro", text: "No exception to fingerprint: the process died, hung, could not run, or a probe judged the output wrong." }));
      for (const [key, list] of groups) {
        parts.push(el("article", { class: "cause plain" }, el("header", {}, el("span", { class: "mark " + statusClass(list[0].status), text: symbolOf.get(list[0].status) || "?" }), " ", el("b", { text: key }), el("span", { class: "count", text: plural(list.length, "cell") })), cellChips(list)));
      }
    }
    if (!shown && !unsigned.length) parts.push(el("p", { class: "empty-note", text: filtering() ? "No failure matches the filters." : "No failures in this run." }));
    view.replaceChildren(...parts, twinNote("root_causes", "signatures"));
  }

  /* Which models, quantizations, adapters and versions a set of cells spans: the shape of a bug at a glance. */
  function spread(list) {
    const box = el("p", { class: "spread" });
    for (const [axis, label] of KEY_AXES) {
      const values = [...new Set(list.map((c) => c[axis]))];
      const all = axisValues[axis].length;
      box.append(el("span", {}, el("span", { class: "muted", text: `${label}: ` }),
        values.length === all && all > 1 ? el("i", { text: `all ${all}` }) : values.slice(0, 8).join(", ") + (values.length > 8 ? ` +${values.length - 8}` : "")));
    }
    return box;
  }

  function sinceTime(runId) {
    const run = (hist.runs || []).find((r) => r.run_id === runId);
    return run ? ` (${fmtTime(run.started_at)})` : "";
  }

  function cellChips(list, limit = 60) {
    const box = el("div", { class: "cells" });
    for (const c of list.slice(0, limit)) {
      box.append(el("button", { type: "button", class: "cellchip " + statusClass(c.status), "data-id": c.cell_id, onclick: () => openCell(c.cell_id) },
        el("span", { class: "sym", text: symOf(c) }), " ", el("span", { text: `${c.model} · ${c.quantization}` }), el("span", { class: "sep", text: " / " }), el("span", { text: `${c.lora} · ${c.engine}` })));
    }
    if (list.length > limit) box.append(el("span", { class: "more", text: `and ${list.length - limit} more (narrow with the filters)` }));
    return box;
  }

  function showSignature(signature) {
    state.view = "causes";
    update();
    const card = sigEls.get(signature);
    if (card) {
      card.scrollIntoView({ block: "start" });
      card.classList.add("flash");
      setTimeout(() => card.classList.remove("flash"), 1200);
    }
  }

  /* ---------- changes since the previous run ---------- */
  function renderChanges() {
    const view = $("#view-changes");
    const n = (changes.regressions || []).length + (changes.fixes || []).length;
    if (!changes.previous_run) {
      view.replaceChildren(el("p", { class: "empty-note", text: "No earlier run of this job in the store: nothing to compare with yet." }),
        ...versionChanges(), ...platformChanges(), twinNote("changes", "version_changes"));
      return;
    }
    const parts = [el("p", { class: "intro" }, "This run against the previous run of job ", el("b", { text: M.job_name }), ": ",
      el("code", { text: changes.previous_run }), ` (${fmtTime(changes.previous_started_at)}). `,
      n ? "" : "No regressions and no fixes.")];
    for (const [kind, title, mark] of CHANGE_KINDS) {
      const list = (changes[kind] || []).filter((ch) => {
        const c = byId.get(ch.cell_id);
        return c ? matches(c) : !filtering();
      });
      if (!list.length) continue;
      const table = el("table", { class: "changes chg-" + kind },
        el("thead", {}, el("tr", {}, ["model · quantization", "LoRA · version", "before", "after", "vLLM", "signature"].map((h) => el("th", { text: h })))));
      const body = el("tbody");
      for (const ch of list) {
        const c = byId.get(ch.cell_id);
        const tr = el("tr", c ? { class: "link", "data-id": ch.cell_id, tabindex: 0, onclick: () => openCell(ch.cell_id), onkeydown: (ev) => { if (ev.key === "Enter") openCell(ch.cell_id); } } : {},
          el("td", { text: ch.row }), el("td", { text: ch.column }),
          el("td", {}, statusMark(ch.before)), el("td", {}, statusMark(ch.after)),
          el("td", { text: ch.before_vllm === ch.after_vllm ? ch.after_vllm || "" : `${ch.before_vllm || "?"} → ${ch.after_vllm || "?"}` }),
          el("td", {}, ch.after_signature ? el("code", { text: ch.after_signature }) : ch.before_signature ? el("s", {}, el("code", { text: ch.before_signature })) : ""));
        body.append(tr);
      }
      table.append(body);
      parts.push(el("h3", {}, el("span", { class: "kind chg-" + kind, text: mark }), ` ${title} `, el("span", { class: "n", text: String(list.length) })), table);
    }
    parts.push(...versionChanges(), ...platformChanges());
    view.replaceChildren(...parts, twinNote("changes", "version_changes"));
  }

  /* Within this run, along the versions (the job's engine order): where each combination's outcome first changed. */
  function versionChanges() {
    const list = acrossVersions.filter(([, c]) => (c ? matches(c) : !filtering()));
    if (!list.length) return [];
    const body = el("tbody");
    for (const [v, c] of list) {
      body.append(el("tr", c ? { class: "link", "data-id": c.cell_id, tabindex: 0, onclick: () => openCell(c.cell_id), onkeydown: (ev) => { if (ev.key === "Enter") openCell(c.cell_id); } } : {},
        el("td", { text: v.row }), el("td", { text: v.lora }), el("td", { text: `${v.previous_engine} → ${v.engine}` }),
        el("td", {}, statusMark(v.before)), el("td", {}, statusMark(v.after)),
        el("td", { text: `${v.before_vllm || "?"} → ${v.after_vllm || "?"}` }),
        el("td", {}, v.after_signature ? el("code", { text: v.after_signature }) : v.before_signature ? el("s", {}, el("code", { text: v.before_signature })) : ""),
        el("td", { class: "muted", text: v.changes > 1 ? `${v.changes} changes` : "" })));
    }
    return [el("h3", {}, el("span", { class: "kind", text: "↔" }), " Across versions in this run ", el("span", { class: "n", text: String(list.length) })),
      el("p", { class: "intro", text: "Per combination, the first version (in the job's order) where its outcome differs from the version before; versions without a verdict are skipped." }),
      el("table", { class: "changes versions" }, el("thead", {}, el("tr", {}, ["model · quantization", "LoRA", "versions", "before", "after", "vLLM", "signature", ""].map((h) => el("th", { text: h })))), body)];
  }

  /* In a matrix of runs on several platforms: the combinations whose verdict differs between them. */
  function platformChanges() {
    const list = (M.platform_differences || []).filter((d) => d.outcomes.some((o) => {
      const c = byId.get(o.cell_id);
      return c ? matches(c) : !filtering();
    }));
    if (!list.length) return [];
    const body = el("tbody");
    for (const d of list) {
      d.outcomes.forEach((o, i) => {
        const open = () => openCell(o.cell_id);
        body.append(el("tr", { class: "link" + (i ? "" : " first"), "data-id": o.cell_id, tabindex: 0, onclick: open, onkeydown: (ev) => { if (ev.key === "Enter") open(); } },
          el("td", { text: i ? "" : d.row }), el("td", { text: i ? "" : d.lora }),
          el("td", { text: i ? "" : d.release || "each platform's newest" }),
          el("td", { text: o.platform }), el("td", { text: `${o.engine}${o.vllm ? ` (vLLM ${o.vllm})` : ""}` }),
          el("td", {}, statusMark(o.status), o.kind ? ` · ${o.kind}` : ""),
          el("td", {}, o.root_cause || o.signature ? el("code", { text: o.root_cause || o.signature }) : "")));
      });
    }
    return [el("h3", {}, el("span", { class: "kind", text: "⇄" }), " Across platforms ", el("span", { class: "n", text: String(list.length) })),
      el("p", { class: "intro", text: "Per combination measured on several platforms, the verdicts where they differ: on the newest vLLM release every platform measured, else (release column says so) each platform's newest, where the version may be part of the difference." }),
      el("table", { class: "changes platforms" }, el("thead", {}, el("tr", {}, ["model · quantization", "LoRA", "vLLM release", "platform", "engine", "verdict", "root cause"].map((h) => el("th", { text: h })))), body)];
  }

  function statusMark(status) {
    if (!status) return el("span", { class: "muted", text: "—" });
    return el("span", { class: "mark " + statusClass(status), title: status }, symbolOf.get(status) || "?", " ", status.replace("_", " "));
  }

  /* ---------- history ---------- */
  function renderHistory() {
    const view = $("#view-history");
    const runs = hist.runs || [];
    const toggle = el("label", { class: "toggle" }, el("input", { type: "checkbox", checked: state.allHistory, onchange: (ev) => { state.allHistory = ev.target.checked; update(); } }), " show combinations whose status never changed");
    const parts = [el("p", { class: "intro" }, `The last ${plural(runs.length, "run")} of job `, el("b", { text: M.job_name }), ", oldest first (history window: ", String(hist.window || runs.length), "). ", toggle)];
    const head = el("tr", {}, el("th", { text: "model · quantization" }), el("th", { text: "LoRA · version" }), runs.map((r, i) => el("th", { class: "run-h" + (i === runs.length - 1 ? " now" : ""), title: `${r.run_id}\n${fmtTime(r.started_at)}\n${Object.entries(r.counts || {}).map(([s, n]) => `${n} ${s}`).join(", ")}` },
      storeLink(r.matrix_key, shortTime(r.started_at)) || shortTime(r.started_at))));
    const countRow = el("tr", { class: "counts" }, el("th", { colspan: 2, text: "failing cells per run" }), runs.map((r) => {
      const bad = ["fail", "crash", "timeout"].reduce((n, s) => n + ((r.counts || {})[s] || 0), 0);
      return el("th", { text: String(bad) });
    }));
    const body = el("tbody");
    let shown = 0;
    let hidden = 0;
    const statusOfSymbol = new Map(legend.map((l) => [l.symbol, l.status]));
    for (const c of cells) {
      if (!matches(c)) continue;
      const strip = (hist.cells || {})[c.cell_id] || "";
      const marks = [...strip];
      const steady = new Set(marks.filter((m) => m !== " ")).size <= 1;
      if (steady && !state.allHistory) {
        hidden++;
        continue;
      }
      if (shown >= 500) {
        hidden++;
        continue;
      }
      shown++;
      body.append(el("tr", { class: "link", "data-id": c.cell_id, onclick: () => openCell(c.cell_id) },
        el("td", { text: `${c.model} · ${c.quantization}` }), el("td", { text: `${c.lora} · ${c.engine}` }),
        marks.map((m) => {
          const status = m === " " ? null : statusOfSymbol.get(m) || "unknown";
          return el("td", { class: "run " + (status ? statusClass(status) : "absent"), title: status || "not in this run", text: status ? m : "–" });
        })));
    }
    parts.push(el("div", { class: "hist-wrap" }, el("table", { class: "hist" }, el("thead", {}, head, countRow), body)));
    if (!shown) parts.push(el("p", { class: "empty-note", text: runs.length < 2 ? "Only one run of this job so far." : "No combination changed status in these runs." }));
    if (hidden) parts.push(el("p", { class: "muted", text: `${hidden} more combination${hidden === 1 ? "" : "s"} ${state.allHistory ? "not shown (narrow with the filters)" : "kept the same status throughout"}.` }));
    view.replaceChildren(...parts, twinNote("history"));
  }

  /* ---------- the known-bug ledger (farm known-bugs check --publish) ---------- */
  const VERDICT_CLASS = { rediscovered: "s-pass", contradicted: "s-fail", "not reproducible": "s-pending" };
  function renderBugs() {
    const view = $("#view-bugs");
    const check = M.known_bugs;
    if (!check) {
      view.replaceChildren(el("p", { class: "empty-note" }, "No known-bug check published to this store yet: ",
        el("code", { text: "farm known-bugs check RUN … --publish" }), " compares jobs/known_bugs.yaml with measured runs."));
      return;
    }
    const parts = [el("p", { class: "intro" }, "The known-bug ledger ", el("code", { text: check.ledger }),
      " against the measured verdicts of ", plural(check.runs.length, "run"), " (", check.runs.join(", "), "), checked ", fmtTime(check.checked_at),
      ". Rediscovered: the measured releases agree with the published window; contradicted: a measured cell disagrees (the evidence names it); not reproducible: nothing measured shows it here. The ledger is never written into a result.")];
    for (const f of check.findings || []) {
      parts.push(el("article", { class: "cause bug", "data-bug": f.id },
        el("header", {}, el("span", { class: "mark " + (VERDICT_CLASS[f.verdict] || "s-unknown"), text: f.verdict }),
          el("code", { class: "sigid", text: f.id }), " ", el("b", { text: f.title || "" }),
          el("span", { class: "count", text: (f.tracker || []).join(", ") })),
        el("p", { class: "msg", text: f.why }),
        (f.evidence || []).length ? el("ul", { class: "evidence" }, f.evidence.map((line) => el("li", { text: line }))) : ""));
    }
    view.replaceChildren(...parts, twinNote("known_bugs"));
  }

  function twinNote(...sections) {
    if (!M.matrix_key) return "";
    return el("p", { class: "twin-note" }, "JSON twin of this view: ", storeLink(M.matrix_key, M.matrix_key), " → ",
      sections.map((section, i) => [i ? ", " : "", el("code", { text: "." + section })]));
  }

  /* ---------- views ---------- */
  const renderers = { causes: renderCauses, changes: renderChanges, history: renderHistory, bugs: renderBugs };
  function update() {
    writeHash();
    syncFilterControls();
    filterGrid();
    for (const tab of document.querySelectorAll(".tabs [role=tab]")) tab.setAttribute("aria-selected", String(tab.dataset.view === state.view));
    for (const view of document.querySelectorAll("main > .view")) view.hidden = view.id !== "view-" + state.view;
    if (renderers[state.view]) renderers[state.view]();
    if ($("#twin-path")) $("#twin-path").textContent = state.view === "matrix" ? " → .cells" : "";
  }

  function renderTabCounts() {
    $("#n-causes").textContent = String(causes.length + (M.signatures || []).filter((g) => !causeOfSig.has(g.signature)).length);
    const sinceLast = changes.previous_run ? `▼${(changes.regressions || []).length} ▲${(changes.fixes || []).length}` : "";
    $("#n-changes").textContent = [sinceLast, acrossVersions.length ? `↔${acrossVersions.length}` : ""].filter(Boolean).join(" ");
    const runs = (hist.runs || []).length;
    $("#n-history").textContent = runs > 1 ? String(runs) : "";
    const found = (M.known_bugs || {}).findings || [];
    $("#n-bugs").textContent = found.length ? `${found.filter((f) => f.verdict === "rediscovered").length}/${found.length}` : "";
  }

  function wire() {
    for (const tab of document.querySelectorAll(".tabs [role=tab]")) {
      tab.addEventListener("click", () => {
        state.view = tab.dataset.view;
        update();
      });
    }
    let timer = null;
    $("#q").addEventListener("input", (ev) => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        state.q = ev.target.value;
        update();
      }, 120);
    });
    $("#clear").addEventListener("click", () => {
      state.statuses.clear();
      state.kinds.clear();
      state.q = "";
      for (const [axis] of KEY_AXES) state.axes[axis] = null;
      update();
    });
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") {
        const open = document.querySelectorAll("#axis-filters details[open]");
        if (open.length) for (const d of open) d.open = false;
        else if (state.cell) openCell(null);
      }
      if (ev.key === "/" && document.activeElement.tagName !== "INPUT") {
        ev.preventDefault();
        $("#q").focus();
      }
    });
    document.addEventListener("click", (ev) => { // one axis popover open at a time; a click outside closes it
      for (const d of document.querySelectorAll("#axis-filters details[open]")) if (!d.contains(ev.target)) d.open = false;
    });
    window.addEventListener("hashchange", () => {
      readHash();
      update();
      renderDetail();
    });
  }

  /* Under `farm dashboard`, reload when the server has re-rendered; from a bucket or a file, this is one failed request. */
  async function liveReload() {
    if (!/^https?:$/.test(location.protocol)) return;
    const url = new URL("_farm/version", location.href);
    let seen = null;
    for (;;) {
      try {
        const response = await fetch(url, { cache: "no-store" });
        if (!response.ok) return;
        const version = (await response.text()).trim();
        if (seen !== null && version !== seen) {
          location.reload();
          return;
        }
        seen = version;
      } catch (err) {
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  }

  async function main() {
    try {
      index(await loadMatrix());
    } catch (err) {
      document.querySelector("main").replaceChildren(el("p", { class: "empty-note", text: `This page could not read its data (${err}). The same data as JSON: ` }, ($("#twin") ? storeLink($("#twin").getAttribute("href"), "matrix.json") : "")));
      window.farm = { ready: true, error: String(err) };
      return;
    }
    readHash();
    renderHeader();
    renderAxisFilters();
    renderGrid();
    renderTabCounts();
    wire();
    update();
    renderDetail();
    const renderMs = performance.now() - started;
    performance.mark("farm:rendered");
    window.farm = { ready: true, renderMs, cells: cells.length };
    document.documentElement.dataset.ready = "1";
    // After the next frame: layout and paint of what was just built are done.
    requestAnimationFrame(() => setTimeout(() => { window.farm.paintedMs = performance.now(); }, 0));
    liveReload();
  }
  main();
})();
