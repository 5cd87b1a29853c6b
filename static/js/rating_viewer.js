// Rating pages' viewer: maps on/off (o), opacity ([ ]), an enlarged view at photo resolution (e, or the
// Enlarge button) with previous / next map (← →) and a synchronised side-by-side compare of two maps.
// Display state lives on the page section (a CSS variable and a class), so both dialog panes and every card
// follow it. Scoring and case navigation stay in rating.js; while the dialog is open its keys are not used.
(function () {
  "use strict";

  function page() { return document.getElementById("rating"); }
  function dialog() { return document.getElementById("rate-dialog"); }
  function slider() { return document.getElementById("rate-opacity"); }

  function setOpacity(value) {
    const section = page();
    const range = slider();
    if (!section || !range) { return; }
    const v = Math.min(1, Math.max(0, Math.round(value * 20) / 20));
    range.value = String(v);
    section.style.setProperty("--heat-opacity", String(v));
    const out = document.getElementById("rate-opacity-value");
    if (out) { out.textContent = Math.round(v * 100) + "%"; }
  }

  function setOverlays(on) {
    const section = page();
    const box = document.getElementById("rate-overlay-toggle");
    if (!section || !box) { return; }
    box.checked = on;
    section.classList.toggle("overlays-off", !on);
  }

  function buttons() { return Array.prototype.slice.call(document.querySelectorAll(".rate-enlarge")); }

  function labelled(label) {
    return buttons().filter(function (b) { return b.dataset.label === label; })[0] || null;
  }

  function fill(pane, button) {
    if (!button) { pane.classList.add("hidden"); return; }
    pane.classList.remove("hidden");
    const heat = pane.querySelector(".heat");
    heat.src = button.dataset.heatPhoto;
    heat.alt = "Map " + button.dataset.label + " on the photo";
    pane.querySelector("figcaption").textContent = "Map " + button.dataset.label;
  }

  let current = null;

  function show(label) {
    const box = dialog();
    const button = labelled(label);
    if (!box || !button) { return; }
    current = label;
    document.getElementById("rate-dialog-label").textContent = label;
    fill(document.getElementById("rate-pane-a"), button);
    const compare = document.getElementById("rate-compare");
    const other = compare && compare.value && compare.value !== label ? labelled(compare.value) : null;
    fill(document.getElementById("rate-pane-b"), other);
    document.getElementById("rate-dialog-panes").classList.toggle("two", other !== null);
    if (!box.open) { box.showModal(); }
  }

  function step(delta) {
    const labels = buttons().map(function (b) { return b.dataset.label; });
    if (!labels.length || current === null) { return; }
    const index = labels.indexOf(current);
    show(labels[(index + delta + labels.length) % labels.length]);
  }

  document.addEventListener("click", function (event) {
    const enlarge = event.target.closest ? event.target.closest(".rate-enlarge") : null;
    if (enlarge) { event.preventDefault(); show(enlarge.dataset.label); return; }
    if (event.target.id === "rate-dialog-prev") { step(-1); }
    if (event.target.id === "rate-dialog-next") { step(1); }
  });

  document.addEventListener("input", function (event) {
    if (event.target.id === "rate-opacity") { setOpacity(parseFloat(event.target.value)); }
  });

  document.addEventListener("change", function (event) {
    if (event.target.id === "rate-overlay-toggle") { setOverlays(event.target.checked); }
    if (event.target.id === "rate-compare" && current !== null) { show(current); }
  });

  // Capture phase: runs before rating.js, so the dialog's keys never score a map or leave the case.
  window.addEventListener("keydown", function (event) {
    if (!page() || event.ctrlKey || event.metaKey || event.altKey) { return; }
    const box = dialog();
    const tag = (event.target.tagName || "").toLowerCase();
    const typing = tag === "textarea" || tag === "select" ||
      (tag === "input" && ["radio", "checkbox", "range", "button", "submit"].indexOf(event.target.type) < 0);
    if (box && box.open) {
      if (event.key === "ArrowLeft" || event.key === "ArrowRight") {
        if (tag === "select") { return; }
        event.preventDefault();
        step(event.key === "ArrowLeft" ? -1 : 1);
      } else if (event.key === "o" || event.key === "[" || event.key === "]") {
        handleDisplayKey(event);
      }
      if (event.key !== "Escape" && event.key !== "Tab" && event.key !== "Enter" && event.key !== " ") {
        event.stopImmediatePropagation();
      }
      return;
    }
    if (typing) { return; }
    if (event.key === "e") {
      const card = event.target.closest ? event.target.closest(".rate-card") : null;
      const button = card ? card.querySelector(".rate-enlarge") : null;
      if (button) { event.preventDefault(); show(button.dataset.label); }
    } else {
      handleDisplayKey(event);
    }
  }, true);

  function handleDisplayKey(event) {
    const range = slider();
    if (event.key === "o") {
      event.preventDefault();
      setOverlays(!document.getElementById("rate-overlay-toggle").checked);
    } else if ((event.key === "[" || event.key === "]") && range) {
      event.preventDefault();
      setOpacity(parseFloat(range.value) + (event.key === "]" ? 0.1 : -0.1));
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    const range = slider();
    if (range) { setOpacity(parseFloat(range.value)); }
  });
})();
