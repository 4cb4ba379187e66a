// faceveil's local page: talks only to the server that sent it (same origin), with the
// page token in a header on every API call. Keys are read into this page's memory and
// sent with each anonymize or recover request; nothing is stored in the browser.
"use strict";

(() => {
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const TOKEN = meta("faceveil-token");
  const MAX_UPLOAD = Number(meta("faceveil-max-upload"));
  const MAX_KEY_FILE = 4096;
  const COLOURS = ["#00c8ff", "#ffa000", "#50dc50", "#ff50c8", "#a078ff"];
  const OFF = "#9aa0a6";
  const CANDIDATE = "#ffe000";
  const ADDED = "#ff2d55";
  const SKIPPED = "#e02020";
  const MIN_BOX = 8; // pixels: a smaller drag is a click
  const TITLES = {
    "wrong-key": "Wrong key",
    metadata: "Missing, damaged or modified metadata",
    model: "Model problem",
    "no-face": "No face",
    "bad-input": "Cannot use this file",
    "bad-key": "Cannot use this key",
    "too-large": "Too large",
    expired: "No longer on the server",
    busy: "Server busy",
    forbidden: "Refused",
    offline: "Server not reachable",
    memory: "Out of memory",
    cancelled: "Stopped",
    bug: "Unexpected error",
  };
  const HINTS = {
    "wrong-key": "Nothing was recovered: use the key, passphrase or identity the file was anonymized for.",
    metadata: "The file was changed after anonymization, or it is not the anonymized PNG.",
  };
  const PHASES = {
    context: "Reading the surroundings",
    invert: "Turning the faces into noise",
    denoise: { anonymize: "Making new faces", recover: "Restoring the faces" },
  };

  // ---- small helpers -----------------------------------------------------

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else if (value === true) node.setAttribute(name, "");
      else if (value !== false && value !== null && value !== undefined) {
        node.setAttribute(name, value);
      }
    }
    node.append(...children.flat().filter((c) => c !== null && c !== undefined));
    return node;
  }

  class ApiError extends Error {
    constructor(error) {
      super(error.message || "unknown error");
      this.kind = error.kind || "bug";
      this.code = error.code || 1;
    }
  }

  const fail = (kind, message) => new ApiError({ kind, code: 1, message });
  const mb = (bytes) => `${(bytes / 1048576).toFixed(bytes < 1048576 ? 2 : 0)} MB`;
  const stem = (name) => name.replace(/\.[^.]*$/, "").replace(/\.anon$/, "") || "photo";
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

  async function call(method, path, body, headers = {}) {
    let response;
    try {
      response = await fetch(path, {
        method, body, cache: "no-store", credentials: "same-origin",
        headers: { "X-Faceveil-Token": TOKEN, ...headers },
      });
    } catch (e) {
      throw fail("offline", "the faceveil server does not answer: is `faceveil serve` still running?");
    }
    if (!response.ok) {
      let error = { kind: "bug", code: 70, message: `HTTP ${response.status}` };
      try {
        error = (await response.json()).error || error;
      } catch (e) { /* not JSON: keep the status */ }
      throw new ApiError(error);
    }
    return response;
  }

  const postJSON = (path, data) =>
    call("POST", path, JSON.stringify(data), { "Content-Type": "application/json" });

  async function upload(path, file) {
    if (file.size > MAX_UPLOAD) {
      throw fail("too-large", `${file.name} is ${mb(file.size)}, more than the limit of ` +
        `${mb(MAX_UPLOAD)} (faceveil serve --max-upload-mb sets it)`);
    }
    const response = await call("POST", path, file, {
      "Content-Type": "application/octet-stream",
      "X-Faceveil-Name": encodeURIComponent(file.name),
    });
    return response.json();
  }

  async function blobURL(path) {
    return URL.createObjectURL(await (await call("GET", path)).blob());
  }

  function loadImage(url) {
    return new Promise((resolve, reject) => {
      const image = new Image();
      image.onload = () => resolve(image);
      image.onerror = () => reject(fail("bad-input", "the browser cannot show this image"));
      image.src = url;
    });
  }

  function notesBlock(notes) {
    if (!notes.length) return null;
    return el("details", { class: "notes" }, el("summary", {}, plural(notes.length, "note")),
      el("ul", {}, notes.map((note) => el("li", {}, note))));
  }

  function showError(node, error) {
    const kind = error instanceof ApiError ? error.kind : "bug";
    const hint = HINTS[kind] ? ` ${HINTS[kind]}` : "";
    node.hidden = false;
    node.dataset.kind = kind;
    const title = TITLES[kind] || "Error";
    let message = error.message;
    if (message.toLowerCase().startsWith(`${title.toLowerCase()}: `)) {
      message = message.slice(title.length + 2); // "Wrong key: wrong key: ..." says it twice
    }
    node.replaceChildren(el("strong", {}, `${title}: `),
      `${message}.${hint}`.replace(/\.\.(\s|$)/, ".$1"));
  }

  function clearError(node) {
    node.hidden = true;
    node.replaceChildren();
    delete node.dataset.kind;
  }

  function base64(bytes) {
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    }
    return btoa(text);
  }

  function saveBlob(url, name) {
    const link = el("a", { href: url, download: name });
    document.body.append(link);
    link.click();
    link.remove();
  }

  function dropZone(label, input, onFiles) {
    input.addEventListener("change", () => {
      onFiles([...input.files]);
      input.value = "";
    });
    label.addEventListener("dragover", (ev) => {
      ev.preventDefault();
      label.classList.add("over");
    });
    label.addEventListener("dragleave", () => label.classList.remove("over"));
    label.addEventListener("drop", (ev) => {
      ev.preventDefault();
      label.classList.remove("over");
      onFiles([...ev.dataTransfer.files]);
    });
  }

  // Follow a job until it ends; ``show`` gets every status.
  async function follow(job, show) {
    for (;;) {
      const status = await (await call("GET", `/api/jobs/${job}`)).json();
      show(status);
      if (status.state === "done") return status;
      if (status.state === "error") throw new ApiError(status.error);
      await sleep(status.state === "queued" ? 700 : 350);
    }
  }

  function progressText(status) {
    if (status.state === "queued") {
      return status.ahead ? `Waiting: ${plural(status.ahead, "job")} ahead` : "Starting";
    }
    if (!status.phase) return "Preparing the faces";
    const phase = PHASES[status.phase];
    const words = typeof phase === "object" ? phase[status.kind] : phase || status.phase;
    return `${words}: step ${status.step} of ${status.steps} ` +
      `(${Math.round(100 * status.fraction)}% done)`;
  }

  function progressBox() {
    const bar = el("progress", { max: "1", value: "0" });
    const text = el("span", { class: "status" });
    const box = el("div", { class: "progress", hidden: true }, bar, text);
    return {
      box,
      show(status) {
        box.hidden = false;
        bar.value = status.fraction || 0;
        text.textContent = progressText(status);
      },
      hide() { box.hidden = true; },
    };
  }

  // ---- keys ------------------------------------------------------------

  // The key controls of a tab: a key file (and, for a new key, "Generate"), or a
  // passphrase (typed twice for a new key).
  function keyChooser(root) {
    const fresh = root.dataset.new === "1"; // anonymize: a new key may be made
    const group = `${root.id}-kind`;
    const radio = (value, text, on) => el("label", {},
      el("input", { type: "radio", name: group, value, checked: on }), ` ${text}`);
    const secret = (cls, text) => el("label", {}, `${text}: `, el("input", {
      type: "password", class: cls, autocomplete: fresh ? "new-password" : "current-password" }));
    const fileInput = el("input", { type: "file", class: "key-file-input" });
    const generate = fresh ? el("button", { type: "button", class: "key-generate" },
      "Generate a new key file") : null;
    const state = el("p", { class: "key-state", role: "status" });
    // Public keys: anonymize for recipients (age1…, ssh-ed25519 …); recover with an
    // identity file (age-keygen's, or an unencrypted SSH private key).
    const publicKeys = fresh
      ? el("label", {}, "Recipients, one per line (age1… or ssh-ed25519 …): ",
        el("textarea", { class: "key-recipients", rows: 3, spellcheck: "false" }))
      : el("label", {}, "Identity file: ", el("input", { type: "file", class: "key-identity" }));
    root.prepend(root.querySelector("legend"),
      el("div", { class: "key-kinds" }, radio("file", "Key file", true),
        radio("passphrase", "Passphrase", false),
        radio("age", fresh ? "Public keys" : "Identity", false)),
      el("div", { class: "key-file" }, el("label", {}, "Key file: ", fileInput), generate),
      el("div", { class: "key-passphrase", hidden: true }, secret("passphrase", "Passphrase"),
        fresh ? secret("passphrase2", "Repeat it") : null),
      el("div", { class: "key-age", hidden: true }, publicKeys),
      state);
    const pass = root.querySelector(".passphrase");
    const pass2 = root.querySelector(".passphrase2");
    const confirm = fresh;
    let generated = null; // a key file made by "Generate", held only in this page

    const kind = () => root.querySelector("input[type=radio]:checked").value;
    for (const radio of root.querySelectorAll("input[type=radio]")) {
      radio.addEventListener("change", () => {
        root.querySelector(".key-file").hidden = kind() !== "file";
        root.querySelector(".key-passphrase").hidden = kind() !== "passphrase";
        root.querySelector(".key-age").hidden = kind() !== "age";
        state.textContent = "";
      });
    }
    fileInput.addEventListener("change", () => {
      generated = null;
      state.textContent = fileInput.files.length ? `Using the key file ${fileInput.files[0].name}.` : "";
    });
    if (generate) {
      generate.addEventListener("click", async () => {
        try {
          const bytes = new Uint8Array(await (await call("POST", "/api/keygen")).arrayBuffer());
          const day = new Date().toISOString().slice(0, 10);
          const name = `faceveil-${day}.key`;
          generated = bytes;
          fileInput.value = "";
          saveBlob(URL.createObjectURL(new Blob([bytes])), name);
          state.replaceChildren(el("strong", {}, "New key generated"),
            ` and downloaded as ${name}; it is the key used now. Keep it safe, with a backup.`);
        } catch (e) {
          showError(state, e);
        }
      });
    }
    return {
      async get() {
        if (kind() === "age") {
          if (fresh) {
            const lines = root.querySelector(".key-recipients").value.split("\n")
              .map((line) => line.trim()).filter((line) => line && !line.startsWith("#"));
            if (!lines.length) throw fail("bad-key", "give at least one recipient");
            return { recipients: lines };
          }
          const id = root.querySelector(".key-identity").files[0];
          if (!id) throw fail("bad-key", "choose the identity file");
          if (id.size > 1 << 20) throw fail("bad-key", `${id.name} is not an identity file`);
          return { identity: base64(new Uint8Array(await id.arrayBuffer())) };
        }
        if (kind() === "passphrase") {
          if (!pass.value) throw fail("bad-key", "type the passphrase");
          if (confirm && pass.value !== pass2.value) {
            throw fail("bad-key", "the two passphrases differ");
          }
          return { passphrase: pass.value };
        }
        if (generated) return { key_file: base64(generated) };
        const file = fileInput.files[0];
        if (!file) {
          throw fail("bad-key", confirm ? "choose a key file, generate one, or use a passphrase"
            : "choose the key file, or use the passphrase");
        }
        if (file.size > MAX_KEY_FILE) throw fail("bad-key", `${file.name} is not a faceveil key file`);
        return { key_file: base64(new Uint8Array(await file.arrayBuffer())) };
      },
    };
  }

  // ---- tabs -------------------------------------------------------------

  function selectTab(name) {
    for (const tab of document.querySelectorAll("[role=tab]")) {
      const on = tab.getAttribute("aria-controls") === name;
      tab.setAttribute("aria-selected", String(on));
      document.getElementById(tab.getAttribute("aria-controls")).hidden = !on;
    }
    if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  }

  // ---- anonymize: review ----------------------------------------------------

  const photos = [];
  const anonymizeButton = document.getElementById("anonymize-button");
  const anonymizeStatus = document.getElementById("anonymize-status");
  const wantSidecar = document.getElementById("want-sidecar");

  const files = [];
  const recoverButton = document.getElementById("recover-button");
  const recoverStatus = document.getElementById("recover-status");

  function updateRecoverButton() {
    recoverButton.disabled = !files.length || files.some((f) => f.running);
    recoverButton.textContent = files.length > 1 ? `Recover ${files.length} files` : "Recover";
  }

  function chosen(photo) {
    const faces = photo.faces.filter((f) => !photo.off.has(f.index)).length;
    return faces + photo.picked.size + photo.boxes.length;
  }

  function updateAnonymizeButton() {
    const ready = photos.filter((p) => chosen(p) > 0);
    anonymizeButton.disabled = !ready.length || photos.some((p) => p.running);
    anonymizeButton.textContent = ready.length > 1 ? `Anonymize ${ready.length} photos` : "Anonymize";
  }

  function rect(ctx, box, colour, width, dash = []) {
    ctx.save();
    ctx.setLineDash(dash);
    ctx.strokeStyle = colour;
    ctx.lineWidth = width;
    ctx.strokeRect(box[0] + width / 2, box[1] + width / 2, box[2] - width, box[3] - width);
    ctx.restore();
  }

  function label(ctx, box, text, colour, font) {
    const pad = Math.round(font / 5);
    const width = ctx.measureText(text).width + 2 * pad;
    const y = box[1] >= font + 2 * pad ? box[1] - font - 2 * pad : box[1];
    ctx.fillStyle = "rgba(0, 0, 0, 0.65)";
    ctx.fillRect(box[0], y, width, font + 2 * pad);
    ctx.fillStyle = colour;
    ctx.fillText(text, box[0] + pad, y + pad);
  }

  function draw(photo, drag = null) {
    const { canvas, image } = photo;
    const ctx = canvas.getContext("2d");
    const side = Math.max(photo.width, photo.height);
    const line = Math.max(2, Math.round(side / 300));
    const font = Math.max(12, Math.round(side / 40));
    ctx.drawImage(image, 0, 0);
    ctx.font = `bold ${font}px sans-serif`;
    ctx.textBaseline = "top";
    photo.faces.forEach((face, k) => {
      const on = !photo.off.has(face.index);
      const colour = on ? COLOURS[k % COLOURS.length] : OFF;
      const [x, y, w, h] = face.box;
      if (on) {
        ctx.fillStyle = `${colour}33`;
        ctx.fillRect(x, y, w, h);
      } else {
        ctx.save();
        ctx.strokeStyle = OFF;
        ctx.lineWidth = line;
        ctx.beginPath();
        ctx.moveTo(x, y); ctx.lineTo(x + w, y + h); ctx.moveTo(x + w, y); ctx.lineTo(x, y + h);
        ctx.stroke();
        ctx.restore();
      }
      rect(ctx, face.box, colour, line, on ? [] : [2 * line, 2 * line]);
      label(ctx, face.box, on ? `${face.index}` : `${face.index} kept`, colour, font);
    });
    photo.candidates.forEach((cand, k) => {
      const picked = photo.picked.has(k);
      rect(ctx, cand.box, picked ? ADDED : CANDIDATE, line, picked ? [] : [3 * line, 2 * line]);
      label(ctx, cand.box, `${picked ? "+" : ""}?${cand.score.toFixed(2)}`,
        picked ? ADDED : CANDIDATE, font);
    });
    for (const skip of photo.skipped) {
      rect(ctx, skip.box, SKIPPED, Math.max(1, line / 2));
    }
    for (const box of photo.boxes) {
      rect(ctx, box, ADDED, line);
      label(ctx, box, "+", ADDED, font);
    }
    if (drag) rect(ctx, drag, ADDED, line, [2 * line, line]);
  }

  function inside(point, box) {
    return point[0] >= box[0] && point[0] < box[0] + box[2] &&
      point[1] >= box[1] && point[1] < box[1] + box[3];
  }

  function clickAt(photo, point) {
    for (let i = photo.boxes.length - 1; i >= 0; i--) {
      if (inside(point, photo.boxes[i])) {
        photo.boxes.splice(i, 1);
        return true;
      }
    }
    const hit = (items) => items
      .map((item, k) => ({ item, k }))
      .filter(({ item }) => inside(point, item.box))
      .sort((a, b) => a.item.box[2] * a.item.box[3] - b.item.box[2] * b.item.box[3])[0];
    const cand = hit(photo.candidates);
    if (cand) {
      toggle(photo.picked, cand.k);
      return true;
    }
    const face = hit(photo.faces);
    if (face) {
      toggle(photo.off, face.item.index);
      return true;
    }
    return false;
  }

  function toggle(set, value, on = !set.has(value)) {
    if (on) set.add(value);
    else set.delete(value);
  }

  function wireCanvas(photo) {
    const { canvas } = photo;
    let start = null;
    let dragging = false;
    const at = (ev) => {
      const r = canvas.getBoundingClientRect();
      return [
        Math.min(photo.width, Math.max(0, (ev.clientX - r.left) * photo.width / r.width)),
        Math.min(photo.height, Math.max(0, (ev.clientY - r.top) * photo.height / r.height)),
      ];
    };
    const boxOf = (a, b) => {
      const x = Math.round(Math.min(a[0], b[0]));
      const y = Math.round(Math.min(a[1], b[1]));
      return [x, y, Math.round(Math.max(a[0], b[0])) - x, Math.round(Math.max(a[1], b[1])) - y];
    };
    canvas.addEventListener("pointerdown", (ev) => {
      if (photo.running) return;
      start = at(ev);
      dragging = false;
      canvas.setPointerCapture(ev.pointerId);
    });
    canvas.addEventListener("pointermove", (ev) => {
      if (!start) return;
      const box = boxOf(start, at(ev));
      dragging = dragging || box[2] >= MIN_BOX || box[3] >= MIN_BOX;
      if (dragging) draw(photo, box);
    });
    canvas.addEventListener("pointerup", (ev) => {
      if (!start) return;
      const box = boxOf(start, at(ev));
      const point = start;
      start = null;
      if (dragging && box[2] >= MIN_BOX && box[3] >= MIN_BOX) photo.boxes.push(box);
      else if (!dragging) clickAt(photo, point);
      refresh(photo);
    });
  }

  function faceList(photo) {
    const items = [];
    const check = (kind, index, on, text, colour, detail, box) => el("li", { class: kind },
      el("label", {},
        el("input", {
          type: "checkbox", "data-kind": kind, "data-index": String(index), checked: on,
          "data-box": box.join(","), disabled: Boolean(photo.running),
          onchange: (ev) => {
            if (kind === "face") toggle(photo.off, index, !ev.target.checked);
            if (kind === "candidate") toggle(photo.picked, index, ev.target.checked);
            if (kind === "box" && !ev.target.checked) photo.boxes.splice(index, 1);
            refresh(photo);
          },
        }),
        " ", el("span", { class: "swatch", "data-colour": colour }), text,
        detail ? el("small", {}, ` ${detail}`) : null));
    photo.faces.forEach((face, k) => {
      const score = face.score === null ? "" : `score ${face.score.toFixed(2)}`;
      items.push(check("face", face.index, !photo.off.has(face.index), `Face ${face.index}`,
        COLOURS[k % COLOURS.length], photo.off.has(face.index) ? "left as it is" : score, face.box));
    });
    photo.candidates.forEach((cand, k) => {
      items.push(check("candidate", k, photo.picked.has(k), `Possible face ?${cand.score.toFixed(2)}`,
        CANDIDATE, "below the detector's threshold: tick to anonymize it too", cand.box));
    });
    photo.boxes.forEach((box, k) => {
      items.push(check("box", k, true, `Face you added at ${box[0]},${box[1]}`, ADDED,
        `${box[2]}x${box[3]} px (untick to remove)`, box));
    });
    for (const skip of photo.skipped) {
      items.push(el("li", { class: "skipped" }, `Face ${skip.index ?? ""} is not anonymized: ${skip.reason}` +
        " (draw a box around it to anonymize it)"));
    }
    const list = el("ul", { class: "face-list" }, items);
    for (const swatch of list.querySelectorAll(".swatch")) {
      swatch.style.background = swatch.dataset.colour; // CSSOM: allowed by the CSP
    }
    return list;
  }

  function refresh(photo) {
    draw(photo);
    photo.list.replaceWith(photo.list = faceList(photo));
    const n = chosen(photo);
    const kept = photo.off.size;
    photo.summary.textContent = n
      ? `${plural(n, "face")} will be anonymized` + (kept ? `; ${kept} left as ${kept === 1 ? "it is" : "they are"}.` : ".")
      : "No face selected: nothing will be anonymized in this photo.";
    updateAnonymizeButton();
  }

  // ---- cards and jobs, shared by both tabs ---------------------------------

  // One card per dropped file: ``kind`` is the API collection ("photos" or "files"),
  // ``build(info, parts, file)`` fills the card once the server has the file.
  async function addCards(chosenFiles, { kind, items, update, build }) {
    const container = document.getElementById(kind);
    for (const file of chosenFiles) {
      let item = null;
      const card = el("article", { class: "card", "data-name": file.name });
      const error = el("p", { class: "error", role: "alert", hidden: true });
      const metaLine = el("span", { class: "meta" }, "Reading…");
      const remove = () => {
        if (item) {
          items.splice(items.indexOf(item), 1);
          call("DELETE", `/api/${kind}/${item.id}`).catch(() => {});
        }
        card.remove();
        update();
      };
      card.append(el("header", {}, el("h3", {}, file.name), metaLine,
        el("button", { type: "button", class: "remove", onclick: remove }, "Remove")), error);
      container.append(card);
      try {
        const info = await upload(`/api/${kind}`, file);
        item = {
          ...info, card, error, metaLine, running: false, progress: progressBox(),
          result: el("div", { class: "result", hidden: true }),
        };
        await build(item, file);
        items.push(item);
      } catch (e) {
        metaLine.textContent = "";
        showError(error, e);
      }
      update();
    }
  }

  // Run one job for a card: ``body()`` is the request, ``show(status, output, job)``
  // fills the result; progress, errors and clean-up are the same for every job.
  async function runJob(item, path, body, show) {
    item.running = true;
    clearError(item.error);
    item.result.hidden = true;
    item.result.replaceChildren(); // no stale result beside a new error
    item.progress.show({ state: "queued", fraction: 0, ahead: 0 });
    let job = null;
    try {
      job = (await (await postJSON(path, await body())).json()).job;
      const status = await follow(job, (s) => item.progress.show(s));
      await show(status, await blobURL(`/api/jobs/${job}/output`), job);
      item.result.hidden = false;
    } catch (e) {
      showError(item.error, e);
    } finally {
      if (job) call("DELETE", `/api/jobs/${job}`).catch(() => {}); // the page holds it now
      item.progress.hide();
      item.running = false;
    }
  }

  function sideBySide(before, after, status, links) {
    return [
      el("div", { class: "pair" },
        el("figure", {}, el("img", { src: before.src, alt: before.caption.toLowerCase() }),
          el("figcaption", {}, before.caption)),
        el("figure", {}, el("img", { src: after.src, alt: after.alt, class: after.alt }),
          el("figcaption", {}, after.caption))),
      el("div", { class: "downloads" }, links),
      el("p", { class: "done" }, `Done in ${status.seconds.toFixed(1)} s.`),
      notesBlock(status.result.notes),
    ];
  }

  // The tab's button: read the key, run every card's job, say how it went.
  async function runAll({ button, status, chooser, items, run, noun, verb }) {
    clearError(status);
    status.textContent = "";
    let key;
    try {
      key = await chooser.get();
    } catch (e) {
      showError(status, e);
      return;
    }
    button.disabled = true;
    await Promise.all(items.map((item) => run(item, key)));
    const failed = items.filter((item) => !item.error.hidden).length;
    status.textContent = failed ? `${plural(failed, noun)} failed: see the message on each.`
      : `${plural(items.length, noun)} ${verb}.`;
  }

  // ---- anonymize ------------------------------------------------------------

  async function buildPhoto(photo) {
    photo.url = await blobURL(`/api/photos/${photo.id}/image`);
    photo.image = await loadImage(photo.url);
    Object.assign(photo, {
      off: new Set(), picked: new Set(), boxes: [], list: el("ul"),
      canvas: el("canvas", { width: String(photo.width), height: String(photo.height),
        "aria-label": `${photo.name}: faces found` }),
      summary: el("p", { class: "summary" }),
    });
    const found = [plural(photo.faces.length, "face")];
    if (photo.candidates.length) found.push(plural(photo.candidates.length, "possible face"));
    if (photo.skipped.length) found.push(`${photo.skipped.length} too small`);
    photo.metaLine.textContent = `${photo.width}x${photo.height} px · ${found.join(" · ")}`;
    photo.card.append(el("div", { class: "stage" }, photo.canvas), photo.summary, photo.list,
      notesBlock(photo.notes), photo.progress.box, photo.result);
    wireCanvas(photo);
    refresh(photo);
  }

  async function anonymizePhoto(photo, key) {
    const name = stem(photo.name);
    const body = () => ({
      photo: photo.id, exclude: [...photo.off], key, sidecar: wantSidecar.checked,
      boxes: [...photo.boxes, ...[...photo.picked].map((k) => photo.candidates[k].box)],
    });
    const show = async (status, output, job) => {
      const links = [el("a", { class: "button download-png", href: output, download: `${name}.anon.png` },
        `Download ${name}.anon.png`)];
      if (status.has_sidecar) {
        links.push(el("a", {
          class: "button download-sidecar", href: await blobURL(`/api/jobs/${job}/sidecar`),
          download: `${name}.anon.faceveil.json`,
        }, `Download ${name}.anon.faceveil.json`));
      }
      photo.result.replaceChildren(...sideBySide({ src: photo.url, caption: "Original" },
        { src: output, alt: "anonymized",
          caption: `Anonymized: ${plural(status.result.faces, "face")} replaced` }, status, links));
    };
    photo.running = true;
    refresh(photo); // the choices are fixed while it runs
    await runJob(photo, "/api/anonymize", body, show);
    refresh(photo);
  }

  // ---- recover ----------------------------------------------------------------

  function describeRecord(record) {
    if (!record) return "no faceveil metadata in this file: add the sidecar JSON saved with it";
    const key = { file: "a key file", passphrase: "a passphrase" }[record.key_type] ||
      "public keys (recover with an identity)";
    return `${plural(record.faces, "anonymized face")} · made with ${key}` +
      (record.created_by ? ` · ${record.created_by}` : "");
  }

  async function buildFile(entry, file) {
    entry.url = URL.createObjectURL(file);
    entry.sidecar = el("input", { type: "file", class: "sidecar-input", accept: ".json,application/json" });
    entry.stage = el("div", { class: "stage" }, el("img", { src: entry.url, alt: "anonymized file", class: "preview" }));
    entry.metaLine.textContent = `${entry.width}x${entry.height} px · ${describeRecord(entry.record)}`;
    entry.card.append(entry.stage,
      el("label", { class: "option" }, entry.record ? "Optional: its sidecar JSON (if the PNG's metadata was stripped): "
        : "Its sidecar JSON: ", entry.sidecar),
      entry.progress.box, entry.result);
  }

  async function recoverFile(entry, key) {
    const body = async () => {
      const sidecarFile = entry.sidecar.files[0];
      if (sidecarFile && sidecarFile.size > MAX_UPLOAD) {
        throw fail("too-large", `${sidecarFile.name} is larger than ${mb(MAX_UPLOAD)}`);
      }
      return { file: entry.id, key, sidecar: sidecarFile ? await sidecarFile.text() : null };
    };
    const show = async (status, output) => {
      const name = `${stem(entry.name)}.recovered.png`;
      entry.result.replaceChildren(...sideBySide({ src: entry.url, caption: "Anonymized" },
        { src: output, alt: "recovered",
          caption: `Recovered: ${plural(status.result.faces, "face")} restored` }, status,
        [el("a", { class: "button download-recovered", href: output, download: name }, `Download ${name}`)]));
      entry.stage.hidden = true; // the result shows it beside the recovered one
    };
    entry.stage.hidden = false;
    await runJob(entry, "/api/recover", body, show);
    updateRecoverButton();
  }

  // ---- start ----------------------------------------------------------------

  for (const node of document.querySelectorAll(".limit")) node.textContent = mb(MAX_UPLOAD);
  for (const tab of document.querySelectorAll("[role=tab]")) {
    tab.addEventListener("click", () => selectTab(tab.getAttribute("aria-controls")));
  }
  selectTab(location.hash === "#recover" ? "recover" : "anonymize");
  const anonymizeKey = keyChooser(document.getElementById("anonymize-key"));
  const recoverKey = keyChooser(document.getElementById("recover-key"));
  dropZone(document.getElementById("photo-drop"), document.getElementById("photo-input"),
    (chosenFiles) => addCards(chosenFiles, {
      kind: "photos", items: photos, update: updateAnonymizeButton, build: buildPhoto }));
  dropZone(document.getElementById("file-drop"), document.getElementById("file-input"),
    (chosenFiles) => addCards(chosenFiles, {
      kind: "files", items: files, update: updateRecoverButton, build: buildFile }));
  anonymizeButton.addEventListener("click", async () => {
    await runAll({ button: anonymizeButton, status: anonymizeStatus, chooser: anonymizeKey,
      items: photos.filter((p) => chosen(p) > 0 && !p.running), run: anonymizePhoto,
      noun: "photo", verb: "anonymized: download them above" });
    updateAnonymizeButton();
  });
  recoverButton.addEventListener("click", async () => {
    await runAll({ button: recoverButton, status: recoverStatus, chooser: recoverKey,
      items: [...files], run: recoverFile, noun: "file", verb: "recovered" });
    updateRecoverButton();
  });
  // The whole window accepts drops on the open tab, so a near miss does not open the file.
  window.addEventListener("dragover", (ev) => ev.preventDefault());
  window.addEventListener("drop", (ev) => ev.preventDefault());
  document.body.dataset.ready = "1";
})();
