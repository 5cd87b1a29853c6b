// New-case page: drag-and-drop or pick a photo, preview it, upload with progress, pick a face when
// several are found. The upload goes to the JSON API (POST /api/v1/cases) with the page's CSRF token.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) { return; }
  const input = document.getElementById("photo-input");
  const zone = document.getElementById("dropzone");
  const preview = document.getElementById("preview");
  const img = document.getElementById("preview-img");
  const picker = document.getElementById("face-picker");
  const pickerHelp = document.getElementById("picker-help");
  const progress = document.getElementById("upload-progress");
  const statusEl = document.getElementById("upload-status");
  const errorEl = document.getElementById("upload-error");
  const button = document.getElementById("upload-button");
  const maxBytes = parseInt(form.dataset.maxBytes, 10);
  const SVG = "http://www.w3.org/2000/svg";
  let file = null;
  let busy = false;

  function showError(message) {
    errorEl.textContent = message;
    errorEl.classList.toggle("hidden", !message);
  }

  function setFile(chosen) {
    showError("");
    clearPicker();
    file = chosen || null;
    if (!file) { button.disabled = true; return; }
    if (file.size === 0) { showError("The file is empty."); file = null; button.disabled = true; return; }
    if (file.size > maxBytes) {
      showError("The file is " + (file.size / 1048576).toFixed(1) + " MB; the limit is " + (maxBytes / 1048576).toFixed(0) + " MB.");
      file = null; button.disabled = true; return;
    }
    button.disabled = true;
    const candidate = file;
    // Preview only what the server would take: decide by the file's first bytes, as the server does, so a
    // text file never shows an image preview before being refused.
    candidate.slice(0, 16).arrayBuffer().then(function (head) {
      if (file !== candidate) { return; }
      const kind = photoKind(new Uint8Array(head));
      if (!kind) {
        showError("This file is not a photo GestaltLens can read (JPEG, PNG, WebP, HEIC, BMP or TIFF).");
        preview.classList.add("hidden");
        file = null;
        return;
      }
      if (img.src) { URL.revokeObjectURL(img.src); }
      const size = "(" + (candidate.size / 1048576).toFixed(2) + " MB)";
      if (kind === "tiff") {  // browsers do not draw TIFF: upload it without a preview (the server reads it)
        img.removeAttribute("src");
        preview.classList.add("hidden");
        statusEl.textContent = "Ready to upload " + size + ". This browser cannot preview TIFF; the aligned face is shown after the upload.";
      } else {
        img.src = URL.createObjectURL(candidate);
        preview.classList.remove("hidden");
        statusEl.textContent = "Ready to upload " + size + ".";
      }
      button.disabled = false;
    });
  }

  // The formats the server takes (app/vision/intake.py), by their first bytes as the server decides; null otherwise.
  function photoKind(b) {
    const ascii = function (from, to) { return String.fromCharCode.apply(null, Array.from(b.slice(from, to))); };
    if (b[0] === 0xFF && b[1] === 0xD8 && b[2] === 0xFF) { return "jpeg"; }
    if (b[0] === 0x89 && ascii(1, 4) === "PNG") { return "png"; }
    if (ascii(0, 4) === "RIFF" && ascii(8, 12) === "WEBP") { return "webp"; }
    if (ascii(4, 8) === "ftyp") { return "heic"; }  // HEIC / HEIF (the server checks the brand)
    if (ascii(0, 2) === "BM") { return "bmp"; }
    if ((ascii(0, 2) === "II" && b[2] === 42 && b[3] === 0) || (ascii(0, 2) === "MM" && b[2] === 0 && b[3] === 42)) {
      return "tiff";
    }
    return null;
  }

  function clearPicker() {
    while (picker.firstChild) { picker.removeChild(picker.firstChild); }
    picker.classList.add("hidden");
    pickerHelp.classList.add("hidden");
  }

  function showPicker(faces, size) {
    clearPicker();
    const w = size ? size[0] : img.naturalWidth;
    const h = size ? size[1] : img.naturalHeight;
    picker.setAttribute("viewBox", "0 0 " + w + " " + h);
    const stroke = Math.max(w, h) / 250;
    // A face box is a touch target: at least 44 CSS px square as displayed (WCAG 2.5.5), grown around the face's
    // centre when the photo is shown small (a phone), with the detector's box drawn inside it.
    const shown = img.getBoundingClientRect().width || w;
    const minSide = 44 * w / shown;
    faces.forEach(function (face) {
      const b = face.box;
      const side = [Math.max(b[2], minSide), Math.max(b[3], minSide)];
      const x = Math.max(0, Math.min(w - side[0], b[0] + b[2] / 2 - side[0] / 2));
      const y = Math.max(0, Math.min(h - side[1], b[1] + b[3] / 2 - side[1] / 2));
      if (side[0] > b[2] || side[1] > b[3]) {
        const inner = document.createElementNS(SVG, "rect");
        inner.setAttribute("x", b[0]); inner.setAttribute("y", b[1]);
        inner.setAttribute("width", b[2]); inner.setAttribute("height", b[3]);
        inner.setAttribute("stroke-width", stroke);
        inner.setAttribute("class", "face-box-inner");
        picker.appendChild(inner);
      }
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", x); rect.setAttribute("y", y);
      rect.setAttribute("width", side[0]); rect.setAttribute("height", side[1]);
      rect.setAttribute("stroke-width", stroke);
      rect.setAttribute("class", "face-choice");
      rect.setAttribute("tabindex", "0");
      rect.setAttribute("role", "button");
      rect.setAttribute("aria-label", "Face " + (face.index + 1) + ", score " + face.score.toFixed(2));
      rect.dataset.faceIndex = String(face.index);
      const choose = function () { upload(face.index); };
      rect.addEventListener("click", choose);
      rect.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); choose(); } });
      const label = document.createElementNS(SVG, "text");
      label.setAttribute("x", b[0] + stroke * 2); label.setAttribute("y", b[1] + stroke * 12);
      label.setAttribute("font-size", stroke * 10);
      label.setAttribute("stroke-width", stroke);
      label.setAttribute("class", "face-label");
      label.textContent = String(face.index + 1);
      picker.appendChild(rect);
      picker.appendChild(label);
    });
    picker.classList.remove("hidden");
    pickerHelp.classList.remove("hidden");
    // the keyboard lands on the first face (the detector's most confident), not back at the top of the page
    const first = picker.querySelector(".face-choice");
    if (first) { first.focus(); }
  }

  function upload(faceIndex) {
    if (!file || busy) { return; }
    busy = true;
    button.disabled = true;
    showError("");
    const data = new FormData();
    data.append("photo", file, "upload");  // the real file name never leaves the browser
    const pseudonym = document.getElementById("pseudonym").value.trim();
    if (pseudonym) { data.append("pseudonym", pseudonym); }
    if (faceIndex !== undefined && faceIndex !== null) { data.append("face_index", String(faceIndex)); }
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/cases");
    xhr.setRequestHeader("X-CSRF-Token", window.GestaltLens.csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    progress.classList.remove("hidden");
    progress.value = 0;
    statusEl.textContent = "Uploading…";
    xhr.upload.addEventListener("progress", function (e) {
      if (e.lengthComputable) {
        progress.value = Math.round((e.loaded / e.total) * 100);
        if (e.loaded === e.total) { statusEl.textContent = "Finding and aligning the face…"; }
      }
    });
    xhr.addEventListener("load", function () {
      busy = false;
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      if (xhr.status === 201 && body) {
        statusEl.textContent = "Done. Opening the case…";
        window.location.assign(body.urls.page);
        return;
      }
      progress.classList.add("hidden");
      statusEl.textContent = "";
      button.disabled = false;
      if (xhr.status === 401) { window.location.assign("/login?next=/cases/new"); return; }
      if (body && body.code === "multiple_faces" && body.faces) {
        showPicker(body.faces, body.image_size);
        statusEl.textContent = body.faces.length + " faces were found: click the patient's face to continue.";
        return;
      }
      showError(body && body.detail ? body.detail : "Upload failed (HTTP " + xhr.status + ").");
    });
    xhr.addEventListener("error", function () {
      busy = false;
      button.disabled = false;
      progress.classList.add("hidden");
      showError("The upload did not reach the server. Check the connection and the file size.");
    });
    xhr.send(data);
  }

  input.addEventListener("change", function () { setFile(input.files[0]); });
  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.add("dragover"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.remove("dragover"); });
  });
  zone.addEventListener("drop", function (e) {
    if (e.dataTransfer && e.dataTransfer.files.length) { setFile(e.dataTransfer.files[0]); }
  });
  form.addEventListener("submit", function (e) { e.preventDefault(); upload(null); });
})();
