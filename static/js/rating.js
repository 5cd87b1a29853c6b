// Rating pages: ratings are saved by htmx as JSON (the "rating-json" extension builds the body; the form posts
// to the study map's own URL, by case position and label),
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
    const regions = Array.prototype.map.call(form.querySelectorAll('input[name="regions"]:checked'),
      function (box) { return box.value; });
    return {
      score: score ? parseInt(score.value, 10) : null,
      regions: regions,
      context: context !== null && context.value === "yes",
      comment: comment && comment.value.trim() ? comment.value : null
    };
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

  // Saves owed, per form: every change that will be sent bumps `changes`; a request carries the count it was
  // built with (its body is read from the form when it is sent), and its answer settles up to that count.
  // A change that hx-sync "queue last" holds back behind a request in flight, or folds into a later one, is
  // therefore still owed until the request that carries it has answered: n / p wait for that.
  const owed = new Map();

  function state(form) {
    let entry = owed.get(form);
    if (!entry) { entry = { changes: 0, settled: 0, failed: false }; owed.set(form, entry); }
    return entry;
  }

  function hasScore(form) { return form.querySelector('input[name="score"]:checked') !== null; }

  // Capture phase: counted before htmx (listening on the form) can start the request for this change.
  // A map that has just finished computing arrives by an htmx swap, and htmx wires the new form's
  // hx-trigger only when the swap *settles* (20 ms later by htmx's default, far more on a loaded machine; base.html
  // now sets 0, which this keeps covering): a score given in between changed the radio but sent nothing, and the
  // rating was lost. htmx.process() wires it now (a
  // form htmx has wired is never processed again: htmx would re-wire it while a save is in flight, since
  // its classes changed, and lose the save queued behind it), before this event reaches the form.
  document.addEventListener("htmx:afterProcessNode", function (event) {
    if (isRateForm(event.target)) { event.target.glWired = true; }
  });
  document.addEventListener("change", function (event) {
    const form = event.target && event.target.closest ? event.target.closest(".rate-form") : null;
    if (!isRateForm(form)) { return; }
    if (!form.glWired && window.htmx) { window.htmx.process(form); }
    if (hasScore(form)) { state(form).changes += 1; }
  }, true);

  // The focused map being swapped in (it finished computing) keeps the keyboard focus.
  let refocus = null;
  document.addEventListener("htmx:beforeSwap", function (event) {
    const card = event.detail.target;
    refocus = card && card.classList && card.classList.contains("rate-card") && card.contains(document.activeElement)
      ? card.id : null;
  });
  document.addEventListener("htmx:afterSwap", function () {
    if (!refocus) { return; }
    const card = document.getElementById(refocus);
    refocus = null;
    if (card && (document.activeElement === document.body || document.activeElement === null)) { card.focus(); }
  });

  function settle(event, ok) {
    const form = event.detail.elt;
    const xhr = event.detail.xhr;
    if (!isRateForm(form) || !xhr || xhr.glCarries === undefined) { return; }
    const entry = state(form);
    entry.settled = Math.max(entry.settled, xhr.glCarries);
    entry.failed = !ok;
    xhr.glCarries = undefined;  // settle once, whichever of the events below comes first
  }

  function unsaved() {
    let waiting = false;
    let failed = false;
    owed.forEach(function (entry, form) {
      if (!document.body.contains(form)) { return; }
      if (entry.settled < entry.changes) { waiting = true; }
      if (entry.failed) { failed = true; }
    });
    return { waiting: waiting, failed: failed };
  }

  // Nothing is saved before a score is chosen: regions ticked first wait for it.
  document.addEventListener("htmx:confirm", function (event) {
    const form = event.detail.elt;
    if (isRateForm(form) && !hasScore(form)) {
      event.preventDefault();
      setStatus(form, "Choose a score (1–5) to save this map.");
    }
  });

  document.addEventListener("htmx:beforeRequest", function (event) {
    const form = event.detail.elt;
    if (!isRateForm(form)) { return; }
    event.detail.xhr.glCarries = state(form).changes;
    setStatus(form, "Saving…");
  });

  ["htmx:sendError", "htmx:timeout", "htmx:sendAbort"].forEach(function (name) {
    document.addEventListener(name, function (event) { settle(event, false); });
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    const form = event.detail.elt;
    if (!isRateForm(form)) { return; }
    const xhr = event.detail.xhr;
    settle(event, event.detail.successful);
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
      // Saves of several maps run at once and their answers can arrive out of order: an older answer must
      // not put the count back (CI saw "5" stay after the sixth save). A rater's count only grows on a page.
      if (rated) { rated.textContent = String(Math.max(data.progress.rated, Number(rated.textContent) || 0)); }
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
    if (card && list.indexOf(card) < 0) {
      // The focused map is still computing (or failed): its score must not land on another map.
      if (window.GestaltLens) {
        window.GestaltLens.toast("Map " + (card.getAttribute("data-label") || "") +
          " is not ready yet: score it once it shows.");
      }
      return false;
    }
    if (!card) {
      card = list.filter(function (c) { return !c.classList.contains("is-rated"); })[0] || list[0];
    }
    if (!card) { return false; }
    const radio = card.querySelector('input[name="score"][value="' + key + '"]');
    if (!radio || radio.matches(":disabled")) { return false; }
    radio.checked = true;
    radio.dispatchEvent(new Event("change", { bubbles: true }));
    const next = list[list.indexOf(card) + 1];
    (next || card).focus();
    return true;
  }

  // Leave the page only once every change has been saved: none in flight, none queued behind one. A save that
  // failed (its map says "Not saved: …") keeps the rater here, told so. A slow one is waited for — the rater asked
  // to move on and does once it is saved — with a word after 15 s, after which the key pressed again leaves at
  // once. While waiting, the newest key decides where to (n, then p: the previous case).
  let pending = null;
  let warned = false;

  function whenSaved(then) {
    if (warned) { pending = null; then(); return; }
    const watching = pending !== null;
    pending = then;
    if (watching) { return; }
    const started = Date.now();
    (function check() {
      if (pending === null) { return; }  // left already, at the rater's word
      const now = unsaved();
      if (!now.waiting && !now.failed) { const go = pending; pending = null; go(); return; }
      if (now.waiting) {
        if (!warned && Date.now() - started >= 15000) {
          warned = true;
          if (window.GestaltLens) {
            window.GestaltLens.toast("A rating is still being saved: the page moves on once it is. " +
                                     "Press the key again to leave now.");
          }
        }
        setTimeout(check, 50);
        return;
      }
      pending = null;
      warned = true;
      if (window.GestaltLens) {
        window.GestaltLens.toast("A rating was not saved (see the map marked “Not saved”). " +
                                 "Press the key again to leave anyway.");
      }
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

  // The previous / next links wait for pending saves too (a comment is saved when the click blurs it).
  document.addEventListener("click", function (event) {
    const link = event.target.closest ? event.target.closest("#next-case, #prev-case") : null;
    if (!link || !page() || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) { return; }
    event.preventDefault();
    whenSaved(function () { window.location.assign(link.href); });
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
