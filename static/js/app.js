// Shared page behaviour: CSRF header on every htmx request, readable errors for failed requests.
(function () {
  "use strict";

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }
  window.GestaltLens = { csrfToken: csrfToken, toast: toast, errorDetail: errorDetail };

  function toast(message) {
    const el = document.createElement("div");
    el.className = "toast";
    el.setAttribute("role", "alert");
    el.textContent = message;
    document.body.appendChild(el);
    setTimeout(function () { el.remove(); }, 6000);
  }

  function errorDetail(xhr) {
    try {
      const body = JSON.parse(xhr.responseText);
      if (body && body.detail) { return String(body.detail); }
    } catch (e) { /* not JSON */ }
    return "The request failed (HTTP " + xhr.status + ").";
  }

  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrfToken();
  });

  // Where an error fragment goes: just before the element the request aimed at (outside tables and lists,
  // where a <div> cannot stand), replacing the error an earlier request left there.
  function errorSlot(target) {
    let anchor = target;
    const holder = target.closest && target.closest("table, ul, ol, select");
    if (holder) { anchor = holder; }
    const previous = anchor.previousElementSibling;
    return { anchor: anchor, previous: previous && previous.classList.contains("hx-error") ? previous : null };
  }

  function showErrorFragment(target, html) {
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    const fragment = template.content.firstElementChild;
    if (!fragment || !target || !target.parentNode) { toast(fragment ? fragment.textContent.trim() : "The request failed."); return; }
    const slot = errorSlot(target);
    if (slot.previous) { slot.previous.replaceWith(fragment); } else { slot.anchor.before(fragment); }
  }

  // A request that worked clears the error an earlier one left beside the same element.
  document.addEventListener("htmx:afterRequest", function (event) {
    const xhr = event.detail.xhr;
    let target = event.detail.target;
    if (!xhr || xhr.status >= 400 || !target) { return; }
    if (!target.isConnected && target.id) { target = document.getElementById(target.id); }  // swapped outerHTML
    if (!target) { return; }
    const slot = errorSlot(target);
    if (slot.previous) { slot.previous.remove(); }
  });

  // Errors of htmx requests are fragments marked X-Error-Fragment (app/web/errors.py): they go beside the target,
  // which stays as it was. Form errors that a route renders into its own target (4xx HTML) are swapped in. JSON
  // errors become a toast.
  document.addEventListener("htmx:beforeSwap", function (event) {
    const xhr = event.detail.xhr;
    if (xhr.status < 400) { return; }
    const type = xhr.getResponseHeader("Content-Type") || "";
    if (xhr.getResponseHeader("X-Error-Fragment")) {
      event.detail.shouldSwap = false;
      event.detail.isError = false;
      showErrorFragment(event.detail.target, xhr.responseText);
    } else if (type.indexOf("text/html") === 0) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    } else {
      toast(errorDetail(xhr));
    }
  });

  document.addEventListener("htmx:sendError", function () {
    toast("The server could not be reached. Check the connection and try again.");
  });
})();
