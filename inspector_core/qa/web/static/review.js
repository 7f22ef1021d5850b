// The review queue, driven by the keyboard: one key = one review, the next item shows at once
// (no page reload). Plain JavaScript, no build step. Writes go to POST /api/reviews with the
// session's CSRF token in the X-CSRF-Token header.
(function () {
  "use strict";
  const root = document.getElementById("review");
  if (!root) return;
  const csrf = root.dataset.csrf;
  const canReview = root.dataset.canReview === "yes";
  const params = new URLSearchParams();
  params.set("since", root.dataset.since || "7d");
  params.set("near", root.dataset.near || "0.15");
  (root.dataset.stations || "").split(",").filter(Boolean).forEach((s) => params.append("station", s));
  const $ = (id) => document.getElementById(id);
  const items = [];
  const known = new Set();
  const done = {};
  let idx = 0;
  let busy = false;
  let drawing = null; // {zoom, start:[x,y], box:[x,y,w,h] in crop px} while marking a missed defect
  const MAX_W = 520;

  function say(text) { $("msg").textContent = text || ""; }

  function setCounts(c) {
    $("n-left").textContent = c.findings_left;
    $("n-near").textContent = c.near_pass_left;
    for (const [k, v] of Object.entries(c.labels)) { const el = $("n-" + k); if (el) el.textContent = v; }
    $("n-reviews").textContent = c.reviews;
  }

  // One refresh of the queue and the counts at a time: keys pressed while one is on its way ask
  // for one more after it (a reviewer faster than the store never piles up requests). The tiles
  // come in a request of their own, sent at the same time: the next items never wait for them.
  let loading = null, again = false;
  async function fetchCounts() {
    const r = await fetch("/api/review/counts?" + params.toString(), { credentials: "same-origin" });
    if (r.ok) setCounts(await r.json());
  }
  async function fetchQueue() {
    const counts = fetchCounts();
    const r = await fetch("/api/review/queue?" + params.toString() + "&limit=40&counts=false", { credentials: "same-origin" });
    const body = await r.json();
    if (!r.ok) { say(body.detail || r.statusText); return; }
    for (const it of body.items) {
      if (!known.has(it.key)) { known.add(it.key); items.push(it); }
    }
    render();
    await counts;
  }
  function load() {
    if (loading) { again = true; return loading; }
    loading = fetchQueue().finally(() => {
      loading = null;
      if (again) { again = false; load(); }
    });
    return loading;
  }

  // The statistics table, redrawn a second after the last review (the page renders it first).
  let statsTimer = null;
  function ci(v, c, digits, scale) {
    if (v === null || c === null) return "-";
    const f = (x) => (x * (scale || 1)).toFixed(digits);
    return `${f(v)} [${f(c[0])}, ${f(c[1])}]`;
  }
  async function refreshStats() {
    const sp = new URLSearchParams(params);
    sp.delete("near");
    const r = await fetch("/api/review/stats?" + sp.toString(), { credentials: "same-origin" });
    if (!r.ok) return;
    const rows = await r.json();
    const tb = document.querySelector("#review-stats tbody");
    if (!tb || !rows.length) return;
    tb.innerHTML = "";
    for (const s of rows) {
      const tr = document.createElement("tr");
      for (const cell of [s.station, s.step, s.kind, s.reviewed, s.tp, s.fp, s.fn, s.tn,
        ci(s.precision, s.precision_ci, 2), ci(s.recall, s.recall_ci, 2),
        ci(s.false_alarms_per_1000, s.false_alarms_per_1000_ci, 0)]) {
        const td = document.createElement("td");
        td.textContent = String(cell);
        tr.appendChild(td);
      }
      tb.appendChild(tr);
    }
  }
  function statsSoon() {
    clearTimeout(statsTimer);
    statsTimer = setTimeout(refreshStats, 1000);
  }

  function svg(tag, attrs) {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    return el;
  }

  function render() {
    const it = items[idx];
    $("item").hidden = !it;
    $("empty").hidden = !!it;
    if (!it) { $("empty").textContent = "nothing left to review in this window"; renderList(); return; }
    const part = it.subject === "part";
    $("i-subject").textContent = part ? "PASS part near the threshold" : "finding on";
    $("i-part").textContent = it.part_id;
    $("i-verdict").textContent = it.verdict;
    $("i-verdict").className = "badge v-" + it.verdict;
    const state = done[it.key] || it.current;
    $("i-state").textContent = state ? "reviewed: " + state.replace("_", " ") : "";
    $("i-state").className = "state" + (state ? " s-" + state : "");
    $("i-facts").textContent =
      `${it.station} · ${it.captured_at.replace("T", " ").slice(0, 19)} UTC · step ${it.step} · ${it.kind} ` +
      `score ${it.score.toFixed(3)}` + (it.min_score !== null ? ` (rule min_score ${it.min_score})` : "") +
      ` · box ${it.box.join(", ")} px` + (part ? " (its top candidate)" : "");
    $("i-link").href = "/inspections/" + it.inspection_id;
    $("kind").value = it.kind;
    $("step").value = it.step;
    const img = $("i-img"), s = $("i-svg");
    s.innerHTML = "";
    if (it.crop) {
      const zoom = Math.max(1, Math.min(10, MAX_W / it.crop.width));
      img.hidden = false;
      img.src = it.crop.url;
      img.width = Math.round(it.crop.width * zoom);
      img.height = Math.round(it.crop.height * zoom);
      s.setAttribute("width", img.width);
      s.setAttribute("height", img.height);
      s.setAttribute("viewBox", `0 0 ${it.crop.width} ${it.crop.height}`);
      const [x, y, w, h] = it.box;
      s.appendChild(svg("rect", {
        x: (x - it.crop.x) * it.crop.scale, y: (y - it.crop.y) * it.crop.scale,
        width: w * it.crop.scale, height: h * it.crop.scale, fill: "none",
        stroke: part ? "#ffb000" : "#ff2020", "stroke-width": 1.5, "vector-effect": "non-scaling-stroke",
      }));
      if (drawing && drawing.box) {
        const [bx, by, bw, bh] = drawing.box;
        s.appendChild(svg("rect", { id: "drawn", x: bx, y: by, width: bw, height: bh, fill: "rgba(0,160,255,.15)",
          stroke: "#00a0ff", "stroke-width": 2, "vector-effect": "non-scaling-stroke" }));
      }
    } else {
      img.hidden = true;
      s.setAttribute("width", 0);
    }
    $("mode").textContent = drawing
      ? "missed defect: drag its box on the image, Enter to save" + (it.crop ? "" : " (no image stored: saved without a box)") + ", Esc to cancel"
      : "";
    renderList();
  }

  function renderList() {
    const ol = $("upnext");
    ol.innerHTML = "";
    const from = Math.max(0, idx - 2);
    items.slice(from, from + 12).forEach((it, n) => {
      const li = document.createElement("li");
      li.value = from + n + 1;
      li.textContent = `${it.subject === "part" ? "PASS" : it.kind} · ${it.part_id}` + (done[it.key] ? ` · ${done[it.key]}` : "");
      if (from + n === idx) li.className = "here";
      else if (done[it.key]) li.className = "done";
      ol.appendChild(li);
    });
  }

  function move(step) {
    idx = Math.max(0, Math.min(items.length, idx + step));
    drawing = null;
    say("");
    render();
  }

  function nextOpen() {
    let n = idx + 1;
    while (n < items.length && done[items[n].key]) n++;
    idx = n;
    drawing = null;
    render();
  }

  async function submit(label, extra) {
    const it = items[idx];
    if (!it || busy) return;
    if (!canReview) { say("your role may not review (ask an admin for role reviewer)"); return; }
    const body = Object.assign({ inspection_id: it.inspection_id, label: label, reason: $("reason").value }, extra);
    busy = true;
    try {
      const r = await fetch("/api/reviews", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(body),
      });
      const got = await r.json();
      if (!r.ok) { say(got.detail || r.statusText); return; }
      done[it.key] = label;
      $("reason").value = "";
      say("");
      nextOpen();
      load();
      statsSoon();
    } catch (e) {
      say("could not save: " + e);
    } finally {
      busy = false;
    }
  }

  function missed(box) {
    const it = items[idx];
    const extra = { kind: $("kind").value.trim() || it.kind, step: $("step").value.trim() || it.step };
    if (box) extra.box = box;
    return submit("missed", extra);
  }

  function frameBox() {
    // The drawn box from crop pixels to frame pixels (the crop's offset and scale).
    const it = items[idx];
    if (!drawing || !drawing.box || !it.crop) return null;
    const [x, y, w, h] = drawing.box, c = it.crop;
    const fx = Math.round(c.x + x / c.scale), fy = Math.round(c.y + y / c.scale);
    return [fx, fy, Math.max(1, Math.round(w / c.scale)), Math.max(1, Math.round(h / c.scale))];
  }

  function cropPoint(ev) {
    const it = items[idx], img = $("i-img"), r = img.getBoundingClientRect();
    const zoom = r.width / it.crop.width;
    return [Math.max(0, Math.min(it.crop.width, (ev.clientX - r.left) / zoom)),
            Math.max(0, Math.min(it.crop.height, (ev.clientY - r.top) / zoom))];
  }

  const stage = $("stage");
  stage.addEventListener("mousedown", (ev) => {
    const it = items[idx];
    if (!it || !it.crop) return;
    ev.preventDefault();
    if (!drawing) drawing = {};
    drawing.start = cropPoint(ev);
    drawing.box = null;
  });
  window.addEventListener("mousemove", (ev) => {
    if (!drawing || !drawing.start || !(ev.buttons & 1)) return;
    const [x0, y0] = drawing.start, [x1, y1] = cropPoint(ev);
    drawing.box = [Math.min(x0, x1), Math.min(y0, y1), Math.abs(x1 - x0), Math.abs(y1 - y0)];
    render();
  });
  window.addEventListener("mouseup", () => { if (drawing) drawing.start = null; });

  document.addEventListener("keydown", (ev) => {
    const t = ev.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) {
      if (ev.key === "Escape" || (ev.key === "Enter" && t.id !== undefined && t.closest("#item"))) {
        ev.preventDefault();
        t.blur();
      }
      return;
    }
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const it = items[idx];
    if (drawing) {
      if (ev.key === "Enter") { ev.preventDefault(); missed(frameBox()); }
      else if (ev.key === "Escape") { drawing = null; render(); }
      return;
    }
    const part = it && it.subject === "part";
    switch (ev.key) {
      case "j": move(1); break;
      case "k": move(-1); break;
      case "r": ev.preventDefault(); $("reason").focus(); break;
      case "m": if (it) { drawing = {}; render(); } break;
      case "d":
        if (!it) break;
        if (part) missed(it.box); // the candidate the machine passed is a real defect
        else submit("confirmed", { defect_id: it.defect_id });
        break;
      case "f":
        if (!it) break;
        if (part) submit("confirmed", {}); // the near-threshold candidate is nothing: the PASS is right
        else submit("false_alarm", { defect_id: it.defect_id });
        break;
      case "u":
        if (it) submit("unsure", part ? {} : { defect_id: it.defect_id });
        break;
      default: return;
    }
  });

  load();
})();
