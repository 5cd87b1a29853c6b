// Rating pages: ratings are saved by htmx as JSON (the "rating-json" extension builds the contract's body),
// hotkeys 1–5 score the focused map and n / p go to the next / previous case, progress updates after each save.
(function () {
  "use strict";

  function page() { return document.getElementById("rating"); }

  function cards() {
    return Array.prototype.slice.call(document.querySelectorAll(".rate-card")).filter(function (card) {
      return card.querySelector(".rate-form") !== null;
    });
  }

  function ratingBody(form) {
    const score = form.querySelector('input[name="score"]:checked');
    const context = form.querySelector('input[name="context"]:checked');
    const comment = form.querySelector('textarea[name="comment"]');
    const study = form.querySelector('input[name="study_id"]');
    const regions = Array.prototype.map.call(form.querySelectorAll('input[name="regions"]:checked'),
      function (box) { return box.value; });
    const body = {
      score: score ? parseInt(score.value, 10) : null,
      regions: regions,
      context: context !== null && context.value === "yes",
      comment: comment && comment.value.trim() ? comment.value : null
    };
    if (study && study.value) { body.study_id = study.value; }
    return body;
  }

  function setStatus(form, text, isError) {
    const status = form.querySelector(".rate-status");
    if (!status) { return; }
    status.textContent = text;
    status.classList.toggle("is-error", Boolean(isError));
  }

  if (window.htmx) {
    window.htmx.defineExtension("rating-json", {
      onEvent: function (name, event) {
        if (name === "htmx:configRequest") {
          event.detail.headers["Content-Type"] = "application/json";
        }
        return true;
      },
      encodeParameters: function (xhr, parameters, elt) {
        xhr.overrideMimeType("text/json");
        return JSON.stringify(ratingBody(elt.closest("form") || elt));
      }
    });
  }

  function isRateForm(el) { return el && el.classList && el.classList.contains("rate-form"); }

  // Nothing is saved before a score is chosen: regions ticked first wait for it.
  document.addEventListener("htmx:confirm", function (event) {
    const form = event.detail.elt;
    if (isRateForm(form) && !form.querySelector('input[name="score"]:checked')) {
      event.preventDefault();
      setStatus(form, "Choose a score (1–5) to save this map.");
    }
  });

  document.addEventListener("htmx:beforeRequest", function (event) {
    if (isRateForm(event.detail.elt)) { setStatus(event.detail.elt, "Saving…"); }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    const form = event.detail.elt;
    if (!isRateForm(form)) { return; }
    const xhr = event.detail.xhr;
    if (!event.detail.successful) {
      setStatus(form, "Not saved: " + (window.GestaltLens ? window.GestaltLens.errorDetail(xhr) : "HTTP " + xhr.status), true);
      return;
    }
    let data = null;
    try { data = JSON.parse(xhr.responseText); } catch (e) { data = null; }
    const when = data && data.created_at ? new Date(data.created_at) : new Date();
    setStatus(form, "Saved " + when.toISOString().slice(11, 19) + " UTC");
    const card = form.closest(".rate-card");
    if (card) { card.classList.add("is-rated"); }
    if (data && data.progress) {
      const rated = document.getElementById("maps-rated");
      const total = document.getElementById("maps-total");
      if (rated) { rated.textContent = String(data.progress.rated); }
      if (total) { total.textContent = String(data.progress.total); }
    }
  });

  function focusedCard() {
    const active = document.activeElement;
    return active && active.closest ? active.closest(".rate-card") : null;
  }

  function score(key) {
    const list = cards();
    let card = focusedCard();
    if (!card || list.indexOf(card) < 0) {
      card = list.filter(function (c) { return !c.classList.contains("is-rated"); })[0] || list[0];
    }
    if (!card) { return false; }
    const radio = card.querySelector('input[name="score"][value="' + key + '"]');
    if (!radio || radio.disabled) { return false; }
    radio.checked = true;
    radio.dispatchEvent(new Event("change", { bubbles: true }));
    const next = list[list.indexOf(card) + 1];
    (next || card).focus();
    return true;
  }

  // Leave the page only when no save is in flight (or queued right behind one).
  function whenSaved(then) {
    let idle = 0;
    const started = Date.now();
    (function check() {
      idle = document.querySelector(".rate-form.htmx-request") ? 0 : idle + 1;
      if (idle >= 2 || Date.now() - started > 10000) { then(); } else { setTimeout(check, 60); }
    })();
  }

  document.addEventListener("keydown", function (event) {
    if (!page() || event.ctrlKey || event.metaKey || event.altKey || event.repeat) { return; }
    const target = event.target;
    const tag = (target.tagName || "").toLowerCase();
    if (tag === "textarea" || tag === "select" || target.isContentEditable ||
        (tag === "input" && ["radio", "checkbox", "button", "submit"].indexOf(target.type) < 0)) { return; }
    if (/^[1-5]$/.test(event.key)) {
      if (score(event.key)) { event.preventDefault(); }
    } else if (event.key === "n" || event.key === "p") {
      const link = document.getElementById(event.key === "n" ? "next-case" : "prev-case");
      if (!link) { return; }
      event.preventDefault();
      whenSaved(function () { window.location.assign(link.href); });
    }
  });

  // Start where the work is: the first map without a rating takes the focus.
  function focusFirst() {
    if (!page()) { return; }
    const list = cards();
    const first = list.filter(function (c) { return !c.classList.contains("is-rated"); })[0] || list[0];
    if (first) { first.focus(); }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", focusFirst);
  } else {
    focusFirst();
  }
})();
