// The comparison view: overlay toggle, crop/photo toggle, opacity slider and hotkeys, enlarged view.
// Display state lives on the panel section, so cards swapped in by htmx polling pick it up through CSS.
(function () {
  "use strict";

  function panel() { return document.getElementById("explanations"); }

  function setOpacity(value) {
    const section = panel();
    const slider = document.getElementById("map-opacity");
    if (!section || !slider) { return; }
    const v = Math.min(1, Math.max(0, Math.round(value * 20) / 20));
    slider.value = String(v);
    section.style.setProperty("--heat-opacity", String(v));
    const out = document.getElementById("opacity-value");
    if (out) { out.textContent = Math.round(v * 100) + "%"; }
  }

  function setOverlays(on) {
    const section = panel();
    const box = document.getElementById("overlay-toggle");
    if (!section || !box) { return; }
    box.checked = on;
    section.classList.toggle("overlays-off", !on);
  }

  function setSpace(space) {
    const section = panel();
    if (!section) { return; }
    section.classList.toggle("space-photo", space === "photo");
  }

  // The large view: named (method and target), without the card's own buttons, and honest about resolution:
  // the map drawn on the full photo at the photo's resolution, or the 112-px crop enlarged pixel for pixel
  // (never smoothed into a blur that looks like detail).
  function enlarge(card) {
    const dialog = document.getElementById("map-dialog");
    if (!dialog || !card.classList.contains("state-done")) { return; }
    const body = dialog.querySelector(".dialog-body");
    const frame = card.querySelector(".map-frame").cloneNode(true);
    const caption = card.querySelector("figcaption").cloneNode(true);
    caption.querySelectorAll(".map-enlarge, .adhoc-rating, .map-faithfulness, details").forEach(function (el) { el.remove(); });
    const onPhoto = !!(panel() && panel().classList.contains("space-photo") && frame.querySelector(".heat-photo"));
    frame.classList.add(onPhoto ? "show-photo" : "show-pixels");
    const holder = card.closest("[data-target-label]");
    const name = card.querySelector("figcaption strong");
    const title = document.createElement("h2");
    title.id = "map-dialog-title";
    title.textContent = (name ? name.textContent : "Map") + (holder ? " — " + holder.dataset.targetLabel : "");
    const note = document.createElement("p");
    note.className = "hint map-dialog-note";
    note.textContent = onPhoto ? "Drawn on the full photo at the photo's resolution."
      : "The 112 × 112 px aligned crop, enlarged pixel for pixel: the map has no finer detail than this.";
    body.replaceChildren(title, frame, caption, note);
    dialog.setAttribute("aria-labelledby", "map-dialog-title");
    dialog.showModal();
  }

  document.addEventListener("input", function (event) {
    if (event.target.id === "map-opacity") { setOpacity(parseFloat(event.target.value)); }
  });

  document.addEventListener("change", function (event) {
    if (event.target.id === "overlay-toggle") { setOverlays(event.target.checked); }
    if (event.target.name === "map-space") { setSpace(event.target.value); }
  });

  document.addEventListener("click", function (event) {
    const button = event.target.closest(".map-enlarge");
    if (button && !event.target.closest("dialog")) { enlarge(button.closest(".map-card")); return; }
    if (event.target.closest("a, button, .adhoc-rating, .map-faithfulness")) { return; }
    const card = event.target.closest(".map-card");
    if (card && !event.target.closest("dialog")) { enlarge(card); }
  });

  document.addEventListener("keydown", function (event) {
    if (!panel() || event.ctrlKey || event.metaKey || event.altKey) { return; }
    const tag = (event.target.tagName || "").toLowerCase();
    if (tag === "select" || tag === "textarea" || (tag === "input" && event.target.type !== "checkbox" &&
        event.target.type !== "radio" && event.target.type !== "range")) { return; }
    const slider = document.getElementById("map-opacity");
    if (event.key === "o") {
      setOverlays(!document.getElementById("overlay-toggle").checked);
    } else if (event.key === "[" && slider) {
      setOpacity(parseFloat(slider.value) - 0.1);
    } else if (event.key === "]" && slider) {
      setOpacity(parseFloat(slider.value) + 0.1);
    } else {
      return;
    }
    if (tag === "input" && event.target.type === "range") {
      event.preventDefault();  // the slider would also move by itself
    }
  });

  // Explain with no method ticked is refused here (and by the server): it never silently means "all".
  document.addEventListener("htmx:beforeRequest", function (event) {
    const form = event.target.closest && event.target.closest(".explain-form");
    if (!form || event.target.tagName !== "FORM") { return; }
    const none = !form.querySelector("input[name=methods]:checked");
    const error = document.getElementById("method-error");
    if (error) { error.hidden = !none; }
    if (none) { event.preventDefault(); }
  });

  document.addEventListener("change", function (event) {
    if (event.target.name === "methods") {
      const error = document.getElementById("method-error");
      if (error && event.target.checked) { error.hidden = true; }
    }
  });

  // Compare's reference picker: a choice fills the reference field (clinicians pick by pseudonym, never type ids);
  // Enter in the search box searches instead of submitting the comparison.
  document.addEventListener("click", function (event) {
    const choice = event.target.closest(".ref-choice");
    const field = document.getElementById("reference");
    if (!choice || !field) { return; }
    field.value = choice.dataset.reference;
    document.querySelectorAll(".ref-choice[aria-pressed]").forEach(function (b) { b.removeAttribute("aria-pressed"); });
    choice.setAttribute("aria-pressed", "true");
    const submit = document.getElementById("compare-submit");
    if (submit) { submit.focus(); }
  });

  document.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && event.target.id === "reference-search") { event.preventDefault(); }
  });

  // The panel arrives by htmx after the page loads: apply the slider's initial value once it is there.
  document.addEventListener("htmx:afterSettle", function () {
    const slider = document.getElementById("map-opacity");
    const section = panel();
    if (slider && section && !section.style.getPropertyValue("--heat-opacity")) { setOpacity(parseFloat(slider.value)); }
  });
})();
