// The search page. Talks to the JSON API only; every text from the server is set with
// textContent, never as HTML, so a product titled "<script>" shows as text.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const K = 24;
  const MIN_BOX = 4; // pixels of the photo, as the server asks
  const DRAG_PX = 6; // a press on a garment that moves further than this draws a box instead
  const MIN_OUTLINE = 24; // a garment smaller than this on screen is outlined at this size, round its centre

  const els = {
    drop: $("drop"), file: $("file"), stage: $("stage"), photo: $("photo"), overlay: $("overlay"),
    outlines: $("garments"), lookHint: $("look-hint"),
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
  const exampleButtons = Array.from(document.querySelectorAll("#examples .example")); // none without examples
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
    answered: "",      // the option the photo was described with (auto, guided, rectangle)
    garments: [],      // the answer's garments: auto offers every one found, the likeliest meant first
    garment: 0,        // the garment shown: its outline is selected, its results and attributes shown
    seen: {},          // garment -> group -> [value the model saw, its probability]
    looks: {},         // garment -> the shopper's narrowing of it: { edits: group -> value, min, max }
    outlinesFor: "",   // the answer the outline buttons were made for (kept while it stays, so focus stays)
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
  // The shopper's narrowing of a garment (the selected one by default): attribute edits and a price range.
  const look = (n = state.garment) => state.looks[n] || (state.looks[n] = { edits: {}, min: "", max: "" });
  const isNarrowed = (lk) => Boolean(Object.keys(lk.edits).length || lk.min || lk.max);
  const seenOf = (n = state.garment) => state.seen[n] || (state.seen[n] = {});
  const isLook = () => state.garments.length > 1;

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
    runSearch({ keep: true, reselect: state.garment });
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
    for (const b of exampleButtons) b.removeAttribute("aria-current");
    state.file = file;
    state.url = URL.createObjectURL(file);
    state.box = state.draft = state.roi = null;
    state.size = null;
    state.queryId = null;
    state.garments = [];
    state.garment = 0;
    state.seen = {};
    // a price range typed before goes with the new photo's first garment; attribute edits do not
    state.looks = { 0: { edits: {}, min: els.priceMin.value.trim(), max: els.priceMax.value.trim() } };
    renderOutlines();
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
    placeOutlines();
    if (!s) return;
    const dpr = window.devicePixelRatio || 1;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    const rect = (b) => [b[0] * s.sx, b[1] * s.sy, (b[2] - b[0]) * s.sx, (b[3] - b[1]) * s.sy];
    const shown = state.draft || state.roi;
    if (shown) {
      const [x, y, w, h] = rect(shown);
      // dim what lies outside the region (lightly where the garments' outlines show the rest)
      ctx.fillStyle = !state.draft && isLook() ? "rgba(20, 18, 30, 0.22)" : "rgba(20, 18, 30, 0.35)";
      ctx.beginPath();
      ctx.rect(0, 0, s.w, s.h);
      ctx.rect(x, y, w, h);
      ctx.fill("evenodd");
      if (!state.draft && isLook()) return; // the outline buttons draw the boxes and their names
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

  // -- the look: every garment found, each an outline button over the photo --------------------
  // Made once per answer (a re-run of the same photo keeps them, and the focus on them); a photo
  // with one garment keeps the single box drawn above.
  function renderOutlines() {
    const key = isLook() ? `${state.queryId}:${state.garments.map((g) => `${g.category}@${g.roi}`).join(";")}` : "";
    if (key !== state.outlinesFor) {
      state.outlinesFor = key;
      els.outlines.replaceChildren(...(key ? state.garments.map((g, n) => outlineButton(g, n)) : []));
    }
    els.lookHint.hidden = !key;
    if (key) {
      els.lookHint.textContent = `${state.garments.length} garments found in your photo. ` +
        "Tap one, or press Tab and Enter, to see products like it.";
    }
    for (const button of els.outlines.children) {
      const selected = Number(button.dataset.garment) === state.garment;
      button.setAttribute("aria-pressed", selected ? "true" : "false");
      button.classList.toggle("selected", selected);
    }
    placeOutlines();
  }

  function outlineButton(g, n) {
    const button = el("button", undefined, "garment");
    button.type = "button";
    button.dataset.garment = String(n);
    button.dataset.category = g.category || "";
    button.setAttribute("aria-label", `garment ${n + 1}: ${niceName(g.category || "garment")}`);
    button.title = `Show products like garment ${n + 1}, the ${niceName(g.category || "garment")}`;
    const tag = el("span", undefined, "garment-tag");
    tag.setAttribute("aria-hidden", "true");
    tag.append(el("span", String(n + 1), "garment-n"), el("span", niceName(g.category || "garment"), "garment-name"));
    button.append(tag);
    button.addEventListener("click", () => { if (!justDrew) selectGarment(n); });
    return button;
  }

  // Each outline over its garment, scaled from the photo's own pixels to the photo as shown.
  function placeOutlines() {
    const s = scale();
    if (!s || !els.outlines.children.length) return;
    for (const button of els.outlines.children) {
      const g = state.garments[Number(button.dataset.garment)];
      if (!g || !g.roi || g.roi.length !== 4) { button.hidden = true; continue; }
      let [x0, y0, x1, y1] = [g.roi[0] * s.sx, g.roi[1] * s.sy, g.roi[2] * s.sx, g.roi[3] * s.sy];
      const small = x1 - x0 < MIN_OUTLINE || y1 - y0 < MIN_OUTLINE; // a dot round its centre
      if (x1 - x0 < MIN_OUTLINE) { const c = (x0 + x1) / 2; x0 = c - MIN_OUTLINE / 2; x1 = c + MIN_OUTLINE / 2; }
      if (y1 - y0 < MIN_OUTLINE) { const c = (y0 + y1) / 2; y0 = c - MIN_OUTLINE / 2; y1 = c + MIN_OUTLINE / 2; }
      button.hidden = false;
      button.classList.toggle("dot", small);
      button.style.left = `${x0}px`;
      button.style.top = `${y0}px`;
      button.style.width = `${x1 - x0}px`;
      button.style.height = `${y1 - y0}px`;
      // the name above the box where there is room, else below it, else inside; within the photo's right edge
      button.classList.toggle("tag-below", y0 < 24 && y1 + 24 <= s.h);
      button.classList.toggle("tag-inside", y0 < 24 && y1 + 24 > s.h);
      button.classList.toggle("tag-right", x0 + 150 > s.w && x1 > 150);
    }
  }

  // Another garment's results at once, from the answer; a garment the shopper narrowed is asked again.
  function selectGarment(n) {
    if (n === state.garment || !state.garments[n]) return;
    if (state.controller) { state.controller.abort(); state.controller = null; }
    state.garment = n;
    syncPrice();
    if (isNarrowed(look(n))) {
      state.roi = state.garments[n].roi;
      renderOutlines();
      draw();
      rerun();
      return;
    }
    const g = state.garments[n];
    clearError();
    showResults({ ...g, id: state.queryId, option: state.answered, offset: 0, garment: n }, g.results);
  }

  function photoPoint(e) {
    const s = scale();
    const r = els.overlay.getBoundingClientRect();
    const x = Math.min(Math.max(e.clientX - r.left, 0), s.w) / s.sx;
    const y = Math.min(Math.max(e.clientY - r.top, 0), s.h) / s.sy;
    return [x, y];
  }

  // Drawing a box: a drag on the photo. A press on a garment's outline draws only once it moves
  // (else it is the outline's click); the click that ends a drag selects nothing.
  let start = null, from = null, drawing = false, justDrew = false;
  els.stage.addEventListener("pointerdown", (e) => {
    if (!scale() || e.button !== 0) return;
    // Touch drags scroll the page unless the box option is chosen; a mouse drag always draws.
    if (e.pointerType !== "mouse" && option() !== "rectangle") return;
    const onOutline = Boolean(e.target.closest(".garment"));
    start = photoPoint(e);
    from = [e.clientX, e.clientY];
    drawing = !onOutline;
    if (drawing) {
      e.preventDefault();
      els.stage.setPointerCapture(e.pointerId);
      state.draft = [...start, ...start];
    }
  });
  els.stage.addEventListener("pointermove", (e) => {
    if (!start) return;
    if (!drawing) {
      if (Math.hypot(e.clientX - from[0], e.clientY - from[1]) < DRAG_PX) return;
      drawing = true;
      els.stage.setPointerCapture(e.pointerId);
    }
    const p = photoPoint(e);
    state.draft = [Math.min(start[0], p[0]), Math.min(start[1], p[1]), Math.max(start[0], p[0]), Math.max(start[1], p[1])];
    draw();
  });
  const finish = () => {
    if (!start) return;
    start = null;
    if (!drawing) return; // a click on an outline: its own handler selects the garment
    drawing = false;
    justDrew = true;
    setTimeout(() => { justDrew = false; }, 0);
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
    state.garments = []; // the box drawn replaces the garments found
    renderOutlines();
    draw();
    setOption("rectangle");
    runSearch();
  };
  els.stage.addEventListener("pointerup", finish);
  els.stage.addEventListener("pointercancel", () => { start = null; drawing = false; state.draft = null; draw(); });

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
  function appendFilters(form, lk = look()) {
    for (const [group, value] of Object.entries(lk.edits)) form.append("filter", `${group}=${value}`);
    if (lk.min) form.append("price_min", lk.min);
    if (lk.max) form.append("price_max", lk.max);
  }

  // The price range shown is the selected garment's.
  function syncPrice() {
    els.priceMin.value = look().min;
    els.priceMax.value = look().max;
  }

  // The photo sent (again). The selected garment's narrowing goes with it and becomes the new
  // answer's first garment's; with ``keep`` (the server forgot the photo, or the catalogue changed)
  // every garment keeps its own and ``reselect`` is shown again once the answer is back.
  async function runSearch({ keep = false, reselect = 0 } = {}) {
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
    if (!keep) {
      state.looks = { 0: look() };
      state.garment = 0;
    }
    state.garments = []; // the outlines are the answer's: gone until it comes
    renderOutlines();
    draw();
    appendFilters(form, look(0));
    await send(form);
    if (reselect && state.queryId && reselect < state.garments.length && o === state.answered) selectGarment(reselect);
  }

  // The same photo again with the shopper's edits, or the next page: by query id and the selected
  // garment, without the photo.
  async function rerun(offset = 0) {
    if (!state.queryId) { runSearch(); return; }
    const form = new FormData();
    form.append("query_id", state.queryId);
    if (state.garments.length > 1) form.append("garment", String(state.garment));
    form.append("k", String(K));
    if (offset) form.append("offset", String(offset));
    appendFilters(form);
    const garment = state.garment;
    await send(form, {
      append: offset > 0,
      retry: () => { state.queryId = null; runSearch({ keep: true, reselect: garment }); },
    });
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
    const which = isLook() ? [el("span", `Garment ${state.garment + 1} of ${state.garments.length}: `, "seen-garment")] : [];
    els.seen.replaceChildren(
      ...which, el("span", "Looking for "), el("strong", niceName(q.category || "anything")),
      el("span", best && q.option === "auto" ? ` (${pct(best.p)} sure)` : how ? ` — ${how}` : ""),
      ...(also.length ? [el("span", `; also searched ${also.map((c) => `${niceName(c.category)} (${pct(c.p)})`).join(", ")}`)] : []));
    els.seen.dataset.option = q.option;
    els.seen.dataset.category = q.category || "";
    els.seen.dataset.garment = String(state.garment);
    const seen = seenOf(), edits = look().edits;
    els.attributes.replaceChildren(...GROUPS
      .filter((g) => g.categories.includes(q.category) || seen[g.name] || edits[g.name])
      .map((g) => attributeChip(g)));
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
    renderOutlines();
    draw();
    if (q.option !== "rectangle" && q.category && Array.from(els.category.options).some((o) => o.value === q.category)) {
      els.category.value = q.category; // "Pick a category" starts from what the model saw
    }
  }

  // One attribute of the selected garment as a chip holding a select: the value seen (with the
  // model's confidence), or the shopper's pick, which narrows that garment's results to the products
  // that have it.
  function attributeChip(g) {
    const li = el("li", "", "chip chip-edit");
    li.dataset.group = g.name;
    const id = `attr-${g.name}`;
    const label = el("label", niceName(g.name), "chip-group");
    label.htmlFor = id;
    const select = el("select");
    select.id = id;
    const [seen, p] = seenOf()[g.name] || [];
    const edits = look().edits;
    if (!seen) { const any = el("option", "any"); any.value = ""; select.append(any); }
    for (const v of g.values) {
      const o = el("option", v === seen && typeof p === "number" ? `${niceName(v)} · ${pct(p)}` : niceName(v));
      o.value = v;
      select.append(o);
    }
    select.value = edits[g.name] || seen || "";
    li.classList.toggle("edited", Boolean(edits[g.name]));
    li.title = edits[g.name] ? `Only products with ${niceName(g.name)} ${edits[g.name]}` : seen ? `Seen: ${seen} (probability ${p})` : "Not seen";
    select.addEventListener("change", () => {
      if (!select.value || select.value === seen) delete edits[g.name];
      else edits[g.name] = select.value;
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

  // An answer: its garments kept (what each shows when tapped), the answered one shown.
  function render(body, append = false) {
    const q = body.query;
    if (!append) {
      if (q.id !== state.queryId) state.seen = {};
      state.queryId = q.id || null;
      state.answered = q.option;
      state.garments = body.garments && body.garments.length ? body.garments : [{ ...q, garment: 0, results: body.results }];
      // What the model saw of each garment: an edited attribute comes back with the shopper's value,
      // so a re-run of the same query keeps what was seen before.
      for (const [n, g] of state.garments.entries()) {
        for (const a of g.attributes || []) if (!a.edited) seenOf(n)[a.group] = [a.value, a.p];
      }
      state.garment = q.garment || 0;
      syncPrice();
    }
    showResults(q, body.results, append);
  }

  // A garment's query and results on the page: a new page of them appended, or in place of the last.
  function showResults(q, results, append = false) {
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
      Object.assign(look(), { min: els.priceMin.value.trim(), max: els.priceMax.value.trim() });
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

  // -- example photos: one is searched exactly as if the shopper had uploaded it --------------
  async function tryExample(button) {
    clearError();
    try {
      const res = await fetch(button.dataset.src);
      if (!res.ok) throw new Error(`${res.status} ${res.statusText}`);
      const blob = await res.blob();
      setOption("auto"); // the example shows what auto finds: every garment, outlined
      await setPhoto(new File([blob], button.dataset.example, { type: blob.type || "image/jpeg" }));
      button.setAttribute("aria-current", "true"); // after setPhoto, which clears it
    } catch (err) {
      showError(`Could not load that example (${err.message}).`);
    }
  }
  for (const button of exampleButtons) button.addEventListener("click", () => tryExample(button));

  syncControls();
  loadCategories();
})();
