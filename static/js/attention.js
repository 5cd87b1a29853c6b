// The restricted-focus viewer of attention studies: the photo blurred, sharp in a window that follows the
// pointer (or in bubbles opened by clicks); mouse and keyboard both work. Window positions are sampled every
// 50 ms, clicks are kept, and both go to the server (photo pixels, ms from the start) when the time is up.
(function () {
  "use strict";
  const root = document.getElementById("attention-view");
  const canvas = document.getElementById("attention-canvas");
  if (!root || !canvas || root.dataset.done === "1") { return; }
  const ctx = canvas.getContext("2d");
  const width = Number(root.dataset.width), height = Number(root.dataset.height);
  const viewer = root.dataset.viewer, seconds = Number(root.dataset.seconds);
  const radius = Math.max(width, height) * 0.09;
  const blur = Math.max(4, Math.round(Math.max(width, height) / 45));
  const timer = document.getElementById("attention-timer");
  const status = document.getElementById("attention-status");
  const begin = document.getElementById("attention-begin");
  const image = new Image();
  const state = { started: false, finished: false, t0: 0, x: width / 2, y: height / 2, placed: false,
                  samples: [], clicks: [], bubbles: [] };

  function now() { return performance.now() - state.t0; }

  function draw() {
    ctx.save();
    ctx.filter = "blur(" + blur + "px)";
    ctx.drawImage(image, 0, 0, width, height);
    ctx.restore();
    if (!state.started) { return; }
    const sharp = viewer === "bubbles" ? state.bubbles.slice() : (state.placed ? [[state.x, state.y]] : []);
    sharp.forEach(function (p) {
      ctx.save();
      ctx.beginPath();
      ctx.arc(p[0], p[1], radius, 0, 2 * Math.PI);
      ctx.clip();
      ctx.drawImage(image, 0, 0, width, height);
      ctx.restore();
    });
    if (viewer === "bubbles" && !state.finished) {
      ctx.save();
      ctx.lineWidth = Math.max(2, width / 300);
      ctx.strokeStyle = "#ffcc00";
      ctx.beginPath();
      ctx.arc(state.x, state.y, radius, 0, 2 * Math.PI);
      ctx.stroke();
      ctx.restore();
    }
  }

  function toPhoto(event) {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * width / box.width, (event.clientY - box.top) * height / box.height];
  }

  function moveTo(x, y) {
    state.x = Math.min(width - 1, Math.max(0, x));
    state.y = Math.min(height - 1, Math.max(0, y));
    state.placed = true;
    draw();
  }

  function reveal() {
    if (!state.started || state.finished) { return; }
    state.clicks.push([now(), state.x, state.y]);
    state.bubbles.push([state.x, state.y]);
    draw();
  }

  function start() {
    if (state.started) { return; }
    state.started = true;
    state.t0 = performance.now();
    begin.disabled = true;
    canvas.focus();
    status.textContent = "Viewing…";
    const sampler = setInterval(function () {
      if (state.placed && viewer !== "bubbles") { state.samples.push([now(), state.x, state.y]); }
      const left = Math.max(0, seconds - now() / 1000);
      timer.textContent = left.toFixed(1) + " s";
    }, 50);
    setTimeout(function () { clearInterval(sampler); finish(); }, seconds * 1000);
    draw();
  }

  function finish() {
    state.finished = true;
    timer.textContent = "0.0 s";
    status.textContent = "Saving…";
    draw();
    fetch("/api/v1/attention-studies/" + root.dataset.study + "/cases/" + root.dataset.position + "/viewing", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": window.GestaltLens.csrfToken() },
      body: JSON.stringify({ samples: state.samples, clicks: state.clicks }),
      credentials: "same-origin",
    }).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    }).then(function (result) {
      if (!result.ok) { status.textContent = result.body.detail || "Saving failed."; return; }
      status.textContent = "Saved.";
      window.location.assign(result.body.next_url);
    }).catch(function () { status.textContent = "Saving failed: check the connection and reload the page."; });
  }

  canvas.addEventListener("pointermove", function (event) {
    if (!state.started || state.finished) { return; }
    const p = toPhoto(event);
    moveTo(p[0], p[1]);
  });
  canvas.addEventListener("click", function (event) {
    if (!state.started) { start(); return; }
    if (viewer !== "bubbles") { return; }
    const p = toPhoto(event);
    moveTo(p[0], p[1]);
    reveal();
  });
  document.addEventListener("keydown", function (event) {
    if (event.target && (event.target.tagName === "INPUT" || event.target.tagName === "TEXTAREA")) { return; }
    if (!state.started) {
      if (event.key === "Enter") { event.preventDefault(); start(); }
      return;
    }
    if (state.finished) { return; }
    const step = (event.shiftKey ? 0.08 : 0.02) * width;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[event.key]) {
      event.preventDefault();
      moveTo(state.x + moves[event.key][0], state.y + moves[event.key][1]);
    } else if (viewer === "bubbles" && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      reveal();
    }
  });
  begin.addEventListener("click", start);
  image.addEventListener("load", draw);
  image.src = root.dataset.photo;
})();
