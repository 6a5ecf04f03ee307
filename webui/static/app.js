// The search page. Talks to the JSON API only; every text from the server is set with
// textContent, never as HTML, so a product titled "<script>" shows as text.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const K = 24;
  const MIN_BOX = 4; // pixels of the photo, as the server asks

  const els = {
    drop: $("drop"), file: $("file"), stage: $("stage"), photo: $("photo"), overlay: $("overlay"),
    actions: $("photo-actions"), photoSize: $("photo-size"), options: $("options"),
    guided: $("guided"), category: $("category"), rectHint: $("rect-hint"),
    recognised: $("recognised"), seen: $("seen"), attributes: $("attributes"), fallback: $("fallback"),
    note: $("note"), error: $("error"), errorText: $("error-text"), errorClose: $("error-close"),
    status: $("status"), welcome: $("welcome"), grid: $("grid"), card: $("card-template"),
    catalogue: $("catalogue-size"), unreadable: $("unreadable"), narrowed: $("narrowed"),
    editHint: $("edit-hint"), more: $("more-results"), moreButton: $("more-button"),
    updated: $("updated"), updatedText: $("updated-text"), updatedSearch: $("updated-search"),
    updatedClose: $("updated-close"), priceMin: $("price-min"), priceMax: $("price-max"),
  };
  // The schema's attribute groups below the category, in schema order, with the categories each applies to.
  const GROUPS = JSON.parse($("attribute-groups").textContent).groups;

  const state = {
    file: null,        // the query photo (File or Blob)
    url: null,         // its object URL
    size: null,        // [width, height] of the photo in pixels
    box: null,         // the rectangle drawn, in photo pixels
    draft: null,       // the rectangle being drawn
    roi: null,         // the region the server searched, in photo pixels
    roiLabel: "",
    controller: null,  // aborts a search that a newer one replaces
    queryId: null,     // the server keeps the photo's description under it for a while
    seen: {},          // group -> value the model saw
    prob: {},          // group -> its probability
    edits: {},         // group -> value the shopper picked instead: sent as filters
    shown: 0,          // results on the page (the next page starts there)
  };

  // -- small helpers ----------------------------------------------------------------------
  const option = () => els.options.querySelector("input[name=option]:checked").value;
  const setOption = (value) => {
    els.options.querySelector(`input[value="${value}"]`).checked = true;
    syncControls();
  };
  const pct = (p) => `${Math.round(p * 100)}%`;
  const niceName = (s) => s.replace(/_/g, " ");

  function el(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function showError(message) {
    els.errorText.textContent = message;
    els.error.hidden = false;
  }
  function clearError() { els.error.hidden = true; }
  els.errorClose.addEventListener("click", clearError);

  function setStatus(text, busy = false) {
    els.status.replaceChildren();
    if (busy) els.status.append(el("span", "", "spinner"));
    if (text) els.status.append(el("span", text));
    els.grid.setAttribute("aria-busy", busy ? "true" : "false");
  }

  // -- start-up: categories and catalogue size ----------------------------------------------
  async function loadCategories() {
    try {
      const res = await fetch("api/categories");
      const body = await res.json();
      if (!res.ok) throw new Error(body.error || res.statusText);
      els.category.replaceChildren(
        ...body.categories.map((c) => { const o = el("option", niceName(c)); o.value = c; return o; }));
      els.category.disabled = false;
    } catch (err) {
      els.category.replaceChildren(el("option", "Categories unavailable"));
      showError(`Could not load the categories (${err.message}).`);
    }
    watchCatalogue();
  }

  // -- the catalogue: its size, a re-index under way, and a new index swapped in -------------------
  let builtSeen = null;
  async function watchCatalogue() {
    try {
      const res = await fetch("api/index");
      if (res.ok) {
        const body = await res.json();
        const run = body.indexing;
        let text = `${body.products.toLocaleString("en")} products`;
        if (run && run.state === "running" && run.rows) {
          text += ` · updating ${Math.min(100, Math.floor((100 * run.done) / run.rows))}%`;
        }
        els.catalogue.textContent = text;
        if (builtSeen !== null && body.built !== builtSeen) {
          els.updatedText.textContent =
            `The catalogue has just been updated: ${body.products.toLocaleString("en")} products.`;
          els.updatedSearch.hidden = !state.file;
          els.updated.hidden = false;
        }
        builtSeen = body.built;
      }
    } catch (_) { /* the count is decoration: try again at the next tick */ }
    const every = Number(els.catalogue.dataset.pollMs) || 10000;
    setTimeout(watchCatalogue, every);
  }
  els.updatedSearch.addEventListener("click", () => {
    els.updated.hidden = true;
    state.queryId = null; // a fresh description: the models may have changed too
    runSearch();
  });
  els.updatedClose.addEventListener("click", () => { els.updated.hidden = true; });

  // -- the photo ------------------------------------------------------------------------------
  async function setPhoto(file, { search = true } = {}) {
    clearError();
    if (file.type && !file.type.startsWith("image/")) {
      showError(`"${file.name}" is not a photo (${file.type}). Choose a JPEG, PNG or WebP image.`);
      return;
    }
    if (state.url) URL.revokeObjectURL(state.url);
    state.file = file;
    state.url = URL.createObjectURL(file);
    state.box = state.draft = state.roi = null;
    state.size = null;
    state.queryId = null;
    state.edits = {};
    els.photo.src = state.url;
    els.stage.hidden = false;
    els.actions.hidden = false;
    els.drop.dataset.state = "photo";
    els.recognised.hidden = true;
    els.grid.replaceChildren();
    try {
      await els.photo.decode();
      state.size = [els.photo.naturalWidth, els.photo.naturalHeight];
      els.photoSize.textContent = `${state.size[0]} × ${state.size[1]} px`;
      els.unreadable.hidden = true;
    } catch (_) {
      // The server says precisely what is wrong with the file; ask it.
      els.photoSize.textContent = "";
      els.stage.hidden = true;
      els.unreadable.hidden = false;
    }
    resizeOverlay();
    if (option() === "rectangle") setOption("auto");
    if (search) runSearch();
  }

  els.file.addEventListener("change", () => {
    if (els.file.files.length) setPhoto(els.file.files[0]);
    els.file.value = ""; // choosing the same file again still searches
  });

  // Drag and drop onto the drop zone; a file dropped elsewhere must not make the browser leave.
  ["dragenter", "dragover"].forEach((type) => document.addEventListener(type, (e) => {
    if (!e.dataTransfer || !Array.from(e.dataTransfer.types).includes("Files")) return;
    e.preventDefault();
    els.drop.classList.add("dragging");
  }));
  document.addEventListener("dragleave", (e) => {
    if (e.target === document.documentElement || !e.relatedTarget) els.drop.classList.remove("dragging");
  });
  document.addEventListener("drop", (e) => {
    if (!e.dataTransfer || !e.dataTransfer.files.length) return;
    e.preventDefault();
    els.drop.classList.remove("dragging");
    setPhoto(e.dataTransfer.files[0]);
  });
  document.addEventListener("paste", (e) => {
    const item = Array.from(e.clipboardData ? e.clipboardData.items : []).find((i) => i.type.startsWith("image/"));
    if (item) setPhoto(item.getAsFile());
  });

  // -- the overlay: the searched region and the rectangle being drawn ------------------------
  function scale() {
    const w = els.photo.clientWidth, h = els.photo.clientHeight;
    if (!state.size || !w || !h) return null;
    return { sx: w / state.size[0], sy: h / state.size[1], w, h };
  }

  // The photo fills the panel's width (small photos are enlarged), within a height that
  // leaves the options in view; the overlay matches it pixel for pixel.
  function resizeOverlay() {
    if (state.size) {
      const cs = getComputedStyle(els.drop);
      const room = els.drop.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
      const maxH = window.innerHeight * (window.innerWidth <= 820 ? 0.5 : 0.6);
      const fit = Math.min(room / state.size[0], maxH / state.size[1]);
      els.photo.style.width = `${Math.floor(state.size[0] * fit)}px`;
      els.photo.style.height = `${Math.floor(state.size[1] * fit)}px`;
    }
    const s = scale();
    if (!s) return;
    const dpr = window.devicePixelRatio || 1;
    els.overlay.width = Math.round(s.w * dpr);
    els.overlay.height = Math.round(s.h * dpr);
    els.overlay.style.width = `${s.w}px`;
    els.overlay.style.height = `${s.h}px`;
    draw();
  }
  new ResizeObserver(resizeOverlay).observe(els.drop);

  function draw() {
    const ctx = els.overlay.getContext("2d");
    const s = scale();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.clearRect(0, 0, els.overlay.width, els.overlay.height);
    if (!s) return;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const rect = (b) => [b[0] * s.sx, b[1] * s.sy, (b[2] - b[0]) * s.sx, (b[3] - b[1]) * s.sy];
    const shown = state.draft || state.roi;
    if (shown) {
      const [x, y, w, h] = rect(shown);
      ctx.fillStyle = "rgba(20, 18, 30, 0.35)";  // dim what lies outside the region
      ctx.beginPath();
      ctx.rect(0, 0, s.w, s.h);
      ctx.rect(x, y, w, h);
      ctx.fill("evenodd");
      ctx.lineWidth = 2.5;
      ctx.strokeStyle = state.draft ? "#ffffff" : "#ff5a36";
      ctx.setLineDash(state.draft ? [6, 4] : []);
      ctx.strokeRect(x, y, w, h);
      if (!state.draft && state.roiLabel) {
        ctx.font = "600 13px system-ui, sans-serif";
        const tw = ctx.measureText(state.roiLabel).width + 12;
        const ly = y >= 22 ? y - 22 : y;
        ctx.fillStyle = "#ff5a36";
        ctx.fillRect(x - 1.25, ly, tw, 22);
        ctx.fillStyle = "#fff";
        ctx.fillText(state.roiLabel, x + 5, ly + 15);
      }
    }
  }

  function photoPoint(e) {
    const s = scale();
    const r = els.overlay.getBoundingClientRect();
    const x = Math.min(Math.max(e.clientX - r.left, 0), s.w) / s.sx;
    const y = Math.min(Math.max(e.clientY - r.top, 0), s.h) / s.sy;
    return [x, y];
  }

  let start = null;
  els.overlay.addEventListener("pointerdown", (e) => {
    if (!scale() || e.button !== 0) return;
    // Touch drags scroll the page unless the box option is chosen; a mouse drag always draws.
    if (e.pointerType !== "mouse" && option() !== "rectangle") return;
    e.preventDefault();
    els.overlay.setPointerCapture(e.pointerId);
    start = photoPoint(e);
    state.draft = [...start, ...start];
  });
  els.overlay.addEventListener("pointermove", (e) => {
    if (!start) return;
    const p = photoPoint(e);
    state.draft = [Math.min(start[0], p[0]), Math.min(start[1], p[1]), Math.max(start[0], p[0]), Math.max(start[1], p[1])];
    draw();
  });
  const finish = (e) => {
    if (!start) return;
    start = null;
    const b = state.draft;
    state.draft = null;
    if (!b || b[2] - b[0] < MIN_BOX || b[3] - b[1] < MIN_BOX) {
      draw();
      if (b && (b[2] - b[0] > 0 || b[3] - b[1] > 0)) showError("That box is too small: drag a larger one around the garment.");
      return;
    }
    state.box = [Math.floor(b[0]), Math.floor(b[1]), Math.ceil(b[2]), Math.ceil(b[3])].map(
      (v, i) => Math.min(v, state.size[i % 2]));
    state.roi = state.box;
    state.roiLabel = "";
    draw();
    setOption("rectangle");
    runSearch();
  };
  els.overlay.addEventListener("pointerup", finish);
  els.overlay.addEventListener("pointercancel", () => { start = null; state.draft = null; draw(); });

  // -- the options --------------------------------------------------------------------------
  function syncControls() {
    const o = option();
    els.guided.hidden = o !== "guided";
    els.rectHint.hidden = o !== "rectangle";
    els.stage.classList.toggle("drawing", o === "rectangle");
  }
  els.options.addEventListener("change", () => {
    syncControls();
    if (option() === "rectangle" && !state.box) {
      clearError();
      setStatus(state.file ? "Now drag on the photo to draw a box around the garment." : "");
      return;
    }
    runSearch();
  });
  els.category.addEventListener("change", () => { if (option() === "guided") runSearch(); });

  // -- searching ----------------------------------------------------------------------------
  function appendFilters(form) {
    for (const [group, value] of Object.entries(state.edits)) form.append("filter", `${group}=${value}`);
    if (els.priceMin.value.trim()) form.append("price_min", els.priceMin.value.trim());
    if (els.priceMax.value.trim()) form.append("price_max", els.priceMax.value.trim());
  }

  async function runSearch() {
    if (!state.file) return;
    const o = option();
    const form = new FormData();
    form.append("image", state.file, state.file.name || "photo.jpg");
    form.append("option", o);
    form.append("k", String(K));
    if (o === "guided") {
      if (!els.category.value) { showError("Pick a category first."); return; }
      form.append("category", els.category.value);
    }
    if (o === "rectangle") {
      if (!state.box) return;
      form.append("box", state.box.join(","));
    }
    appendFilters(form);
    await send(form);
  }

  // The same photo again with the shopper's edits, or the next page: by query id, without the photo.
  async function rerun(offset = 0) {
    if (!state.queryId) { runSearch(); return; }
    const form = new FormData();
    form.append("query_id", state.queryId);
    form.append("k", String(K));
    if (offset) form.append("offset", String(offset));
    appendFilters(form);
    await send(form, { append: offset > 0, retry: () => { state.queryId = null; runSearch(); } });
  }

  async function send(form, { append = false, retry = null } = {}) {
    if (state.controller) state.controller.abort();
    const controller = new AbortController();
    state.controller = controller;
    clearError();
    setStatus(append ? "Loading more…" : "Searching…", true);
    if (!append) els.grid.classList.add("stale");
    let res, body = null;
    try {
      res = await fetch("api/search", { method: "POST", body: form, signal: controller.signal });
      try { body = await res.json(); } catch (_) { body = null; }
    } catch (err) {
      if (err.name === "AbortError") return;
      setStatus("");
      showError("The server cannot be reached. Check your connection and try again.");
      return;
    }
    if (controller !== state.controller) return; // a newer search is on its way
    state.controller = null;
    if (res.status === 404 && retry) { retry(); return; } // the server forgot the photo: send it again
    if (!res.ok) {
      setStatus("");
      const why = body && body.error ? body.error : `the server answered ${res.status} ${res.statusText}`;
      showError(res.status === 413 ? `The photo is too large: ${why}.` : `${why.charAt(0).toUpperCase()}${why.slice(1)}.`);
      return;
    }
    render(body, append);
  }

  // -- rendering ------------------------------------------------------------------------------
  function renderQuery(q) {
    els.recognised.hidden = false;
    const how = { auto: "found by the model", guided: "the category you picked", rectangle: "in the box you drew" }[q.option] || "";
    const best = (q.categories || []).find((c) => c.category === q.category);
    const also = (q.searched || []).filter((c) => c.category !== q.category);
    els.seen.replaceChildren(
      el("span", "Looking for "), el("strong", niceName(q.category || "anything")),
      el("span", best && q.option === "auto" ? ` (${pct(best.p)} sure)` : how ? ` — ${how}` : ""),
      ...(also.length ? [el("span", `; also searched ${also.map((c) => `${niceName(c.category)} (${pct(c.p)})`).join(", ")}`)] : []));
    els.seen.dataset.option = q.option;
    els.seen.dataset.category = q.category || "";
    // What the model saw: an edited attribute comes back with the shopper's value, so a re-run of
    // the same query keeps what was seen before.
    if (q.id !== state.queryId) { state.seen = {}; state.prob = {}; }
    state.queryId = q.id || null;
    for (const a of q.attributes || []) {
      if (!a.edited) { state.seen[a.group] = a.value; state.prob[a.group] = a.p; }
    }
    const prob = state.prob;
    els.attributes.replaceChildren(...GROUPS
      .filter((g) => g.categories.includes(q.category) || state.seen[g.name] || state.edits[g.name])
      .map((g) => attributeChip(g, prob[g.name])));
    els.editHint.hidden = !q.id;
    const narrowed = q.filters || [];
    els.narrowed.hidden = !narrowed.length;
    els.narrowed.replaceChildren(el("span", "Only products with "), ...narrowed.flatMap((key, i) => {
      const [group, value] = key.split("=", 2);
      const what = group === "price_min" ? `price from ${value}` : group === "price_max" ? `price up to ${value}` : `${niceName(group)} ${niceName(value)}`;
      return [...(i ? [el("span", ", ")] : []), el("strong", what)];
    }));
    els.narrowed.dataset.filters = narrowed.join(" ");
    els.fallback.hidden = !q.fallback;
    els.note.hidden = !q.note;
    els.note.textContent = q.note || "";
    state.roi = q.roi && q.roi.length === 4 ? q.roi : null;
    state.roiLabel = q.category ? niceName(q.category) : "";
    draw();
    if (q.option !== "rectangle" && q.category && Array.from(els.category.options).some((o) => o.value === q.category)) {
      els.category.value = q.category; // "Pick a category" starts from what the model saw
    }
  }

  // One attribute as a chip holding a select: the value seen (with the model's confidence), or the
  // shopper's pick, which narrows the results to the products that have it.
  function attributeChip(g, p) {
    const li = el("li", "", "chip chip-edit");
    li.dataset.group = g.name;
    const id = `attr-${g.name}`;
    const label = el("label", niceName(g.name), "chip-group");
    label.htmlFor = id;
    const select = el("select");
    select.id = id;
    const seen = state.seen[g.name];
    if (!seen) { const any = el("option", "any"); any.value = ""; select.append(any); }
    for (const v of g.values) {
      const o = el("option", v === seen && typeof p === "number" ? `${niceName(v)} · ${pct(p)}` : niceName(v));
      o.value = v;
      select.append(o);
    }
    select.value = state.edits[g.name] || seen || "";
    li.classList.toggle("edited", Boolean(state.edits[g.name]));
    li.title = state.edits[g.name] ? `Only products with ${niceName(g.name)} ${state.edits[g.name]}` : seen ? `Seen: ${seen} (probability ${p})` : "Not seen";
    select.addEventListener("change", () => {
      if (!select.value || select.value === seen) delete state.edits[g.name];
      else state.edits[g.name] = select.value;
      rerun();
    });
    li.append(label, select);
    return li;
  }

  function renderCard(r, i) {
    const card = els.card.content.firstElementChild.cloneNode(true);
    card.dataset.id = r.id;
    card.dataset.photo = String(r.photo || 0);
    if (r.photo) {
      const badge = card.querySelector(".photo-badge");
      badge.textContent = `photo ${r.photo + 1}`;
      badge.title = "The product's photo most like yours";
      badge.hidden = false;
    }
    card.dataset.category = r.category || "";
    card.dataset.attributes = JSON.stringify(r.attributes || {});
    const img = card.querySelector("img");
    img.src = r.image_url;
    img.alt = r.title || r.id;
    img.addEventListener("error", () => card.querySelector(".thumb").classList.add("missing"), { once: true });
    card.querySelector(".title").textContent = r.title || r.id;
    card.querySelector(".title").title = r.title || r.id;
    card.querySelector(".category").textContent = niceName(r.category || "");
    if (typeof r.price === "number") {
      card.querySelector(".price").textContent = r.price.toLocaleString("en", { style: "currency", currency: "USD" });
    }
    const score = card.querySelector(".score");
    score.textContent = `#${i + 1} · score ${Number(r.score).toFixed(3)}`;
    score.title = `Lower is closer. Appearance distance ${r.hamming} bits, colour distance ${Number(r.colour_distance).toFixed(3)}.`;
    card.querySelector(".shared").replaceChildren(...(r.shared_attributes || []).map((token) => {
      const [group, value] = token.split("=", 2);
      const li = el("li", `✓ ${niceName(value || group)}`, "chip shared-chip");
      li.title = `Same ${niceName(group)} as your photo`;
      return li;
    }));
    card.querySelector(".more").addEventListener("click", () => moreLikeThis(r));
    return card;
  }

  function render(body, append = false) {
    const q = body.query, results = body.results;
    const start = append ? state.shown : 0;
    if (!append) renderQuery(q);
    els.grid.classList.remove("stale");
    const cards = results.map((r, i) => renderCard(r, start + i));
    if (append) els.grid.append(...cards); else els.grid.replaceChildren(...cards);
    state.shown = start + results.length;
    els.more.hidden = !q.more;
    const ms = q.timings_ms && typeof q.timings_ms.total === "number" ? ` · ${Math.round(q.timings_ms.total)} ms` : "";
    const what = niceName(q.category || "any category");
    const n = state.shown;
    const hint = (q.filters || []).length ? "Try changing an attribute back." : "Try another option or another photo.";
    setStatus(n
      ? `${n} similar product${n === 1 ? "" : "s"} in ${what}${ms}`
      : `No products found in ${what}${ms}. ${hint}`);
  }
  els.moreButton.addEventListener("click", () => rerun(state.shown));
  for (const input of [els.priceMin, els.priceMax]) {
    input.addEventListener("change", () => {
      if (!input.checkValidity()) { showError(`The price must be a number of 0 or more, not "${input.value}".`); return; }
      clearError();
      if (state.file) rerun();
    });
  }

  async function moreLikeThis(r) {
    clearError();
    try {
      const res = await fetch(r.image_url);
      if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
      const blob = await res.blob();
      const file = new File([blob], `${r.id}.jpg`, { type: blob.type || "image/jpeg" });
      if (r.category && Array.from(els.category.options).some((o) => o.value === r.category)) {
        els.category.value = r.category;
        setOption("guided");
      } else {
        setOption("auto");
      }
      window.scrollTo({ top: 0, behavior: "smooth" });
      await setPhoto(file);
    } catch (err) {
      showError(`Could not load that product's photo (${err.message}).`);
    }
  }

  syncControls();
  loadCategories();
})();
