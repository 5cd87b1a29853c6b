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

  // Form errors come back as HTML pages with a 4xx status: show them. JSON errors become a toast.
  document.addEventListener("htmx:beforeSwap", function (event) {
    const xhr = event.detail.xhr;
    if (xhr.status < 400) { return; }
    const type = xhr.getResponseHeader("Content-Type") || "";
    if (type.indexOf("text/html") === 0) {
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
