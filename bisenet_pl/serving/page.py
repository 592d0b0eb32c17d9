"""The upload page served at `/`: one self-contained HTML document (inline CSS and JS, nothing fetched
from any other host), so it works on a machine without network.

Choose a photo and the page posts it to `/overlay` with `fetch`, then shows the returned PNG in
`<img id="overlay">`. `/?demo=1` fetches the server's `/demo-image` and hands it to the same `upload`
function a chosen file goes through, which is how the browser test drives the page without a file
dialog. When the overlay has loaded, the page writes what it showed into the DOM (`#overlay`'s
`data-sha256` of the bytes received, its natural size, `body[data-state]`), for a person to read and a
test to check.
"""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>BiSeNetV2 segmentation</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
  #status { margin: 1rem 0; }
  #error { color: #b00020; white-space: pre-wrap; }
  #overlay { max-width: 100%; display: none; border: 1px solid #ccc; }
  body[data-state="done"] #overlay { display: block; }
  small { color: #666; }
</style>
</head>
<body data-state="idle">
<h1>BiSeNetV2 segmentation</h1>
<p><small id="model">loading model information...</small></p>
<form id="form" onsubmit="return false">
  <label for="file">Photo:</label>
  <input type="file" id="file" name="file" accept="image/*">
</form>
<p id="status">Choose a photo to segment.</p>
<p id="error"></p>
<img id="overlay" alt="segmentation overlay">
<script>
"use strict";
const $ = (id) => document.getElementById(id);

function setState(state, text) {
  document.body.dataset.state = state;
  $("status").textContent = text;
}

async function sha256(bytes) {
  if (!(window.crypto && crypto.subtle)) return "";
  const digest = await crypto.subtle.digest("SHA-256", bytes);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function upload(blob) {
  $("error").textContent = "";
  setState("uploading", "Segmenting " + (blob.name || "the image") + "...");
  const form = new FormData();
  form.append("file", blob, blob.name || "image");
  let response;
  try {
    response = await fetch("/overlay?format=png", { method: "POST", body: form });
  } catch (e) {
    setState("error", "The server did not answer.");
    $("error").textContent = String(e);
    return;
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({ error: response.statusText }));
    setState("error", "The server refused the image (" + response.status + ").");
    $("error").textContent = body.error || JSON.stringify(body);
    return;
  }
  const bytes = await response.arrayBuffer();
  const img = $("overlay");
  img.dataset.sha256 = await sha256(bytes);
  img.onload = () => {
    img.dataset.width = String(img.naturalWidth);
    img.dataset.height = String(img.naturalHeight);
    setState("done", "Overlay " + img.naturalWidth + "x" + img.naturalHeight + " in "
      + response.headers.get("X-Latency-Ms") + " ms (batch of "
      + response.headers.get("X-Batch-Size") + ").");
  };
  img.onerror = () => setState("error", "The overlay could not be shown.");
  img.src = URL.createObjectURL(new Blob([bytes], { type: response.headers.get("Content-Type") }));
}

$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) upload(file);
});

fetch("/health").then((r) => r.json()).then((h) => {
  $("model").textContent = h.model + " - " + h.num_classes + " classes, " + h.backend + " on " + h.device;
}).catch(() => { $("model").textContent = ""; });

if (new URLSearchParams(location.search).get("demo") === "1") {
  fetch("/demo-image").then((r) => r.blob()).then((blob) => upload(new File([blob], "demo.png")));
}
</script>
</body>
</html>
"""

__all__ = ["PAGE"]
