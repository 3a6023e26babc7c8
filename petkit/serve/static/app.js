"use strict";
// The lost-pet finder page: identify from photos, register a pet. Talks only to this service's /v1 API.
(function () {
  const $ = (id) => document.getElementById(id);
  let threshold = null;

  function text(tag, value, cls) {
    const el = document.createElement(tag);
    el.textContent = value;
    if (cls) el.className = cls;
    return el;
  }

  function thumb(src, alt) {
    const img = document.createElement("img");
    img.src = src;
    img.alt = alt;
    img.loading = "lazy";
    return img;
  }

  function preview(input, box) {
    box.replaceChildren();
    for (const file of input.files) box.appendChild(thumb(URL.createObjectURL(file), file.name));
  }

  async function call(method, url, body, key) {
    const headers = {};
    if (key) headers["Authorization"] = "Bearer " + key;
    const response = await fetch(url, { method, body, headers });
    let data = null;
    try { data = await response.json(); } catch (e) { data = { error: response.statusText }; }
    if (!response.ok) {
      const error = new Error((data && data.error) || ("HTTP " + response.status));
      error.hint = data && data.hint;
      error.status = response.status;
      throw error;
    }
    return data;
  }

  async function refreshStatus() {
    try {
      const h = await call("GET", "/v1/health");
      threshold = h.threshold.value;
      $("status").textContent = `${h.gallery.identities} pets registered (${h.gallery.photos} photos) · match threshold ${threshold.toFixed(3)}`;
    } catch (e) {
      $("status").textContent = "the service does not answer: " + e.message;
    }
  }

  function showMatches(result) {
    const decision = $("decision");
    const list = $("matches");
    list.replaceChildren();
    if (result.decision === "match") {
      decision.className = "match";
      decision.textContent = `Likely ${result.identity} (similarity ${result.matches[0].score.toFixed(3)})`;
    } else {
      decision.className = "unknown";
      decision.textContent = "Not registered: no enrolled pet is similar enough." + (result.matches.length ? " Closest below:" : "");
    }
    for (const m of result.matches) {
      const item = document.createElement("li");
      item.className = "match" + (m.accepted ? " accepted" : "");
      item.dataset.identity = m.identity;
      const first = m.photos[0];
      item.appendChild(first ? thumb(first.thumbnail, m.identity) : text("div", ""));
      const info = document.createElement("div");
      info.appendChild(text("div", m.identity, "name"));
      info.appendChild(text("div", `similarity ${m.score.toFixed(3)}${m.accepted ? " · above the threshold" : ""}`, "score"));
      const more = document.createElement("div");
      more.className = "more";
      for (const p of m.photos.slice(1)) more.appendChild(thumb(p.thumbnail, m.identity));
      info.appendChild(more);
      item.appendChild(info);
      list.appendChild(item);
    }
  }

  function fail(target, e) {
    target.className = "error";
    target.textContent = e.message + (e.hint ? " (" + e.hint + ")" : "");
  }

  async function identify(event) {
    if (event) event.preventDefault();
    const input = $("identify-photos");
    if (!input.files.length) return;
    const form = new FormData();
    for (const file of input.files) form.append("photos", file);
    const button = $("identify-button");
    button.disabled = true;
    $("decision").className = "";
    $("decision").textContent = "searching…";
    try {
      showMatches(await call("POST", "/v1/identify", form));
    } catch (e) {
      $("matches").replaceChildren();
      fail($("decision"), e);
    } finally {
      button.disabled = false;
    }
  }

  async function enrol(event) {
    event.preventDefault();
    const identity = $("enrol-identity").value.trim();
    const input = $("enrol-photos");
    const status = $("enrol-status");
    const form = new FormData();
    for (const file of input.files) form.append("photos", file);
    const button = $("enrol-button");
    button.disabled = true;
    status.className = "";
    status.textContent = "registering…";
    try {
      const result = await call("POST", "/v1/identities/" + encodeURIComponent(identity) + "/photos", form, $("enrol-key").value);
      const added = result.photos.filter((p) => p.created).length;
      status.className = "ok";
      status.textContent = `Registered ${result.identity}: ${added} new photo(s)` + (added < result.photos.length ? `, ${result.photos.length - added} already there` : "");
      $("enrol-form").reset();
      $("enrol-preview").replaceChildren();
      refreshStatus();
    } catch (e) {
      fail(status, e);
    } finally {
      button.disabled = false;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("identify-photos").addEventListener("change", () => { preview($("identify-photos"), $("identify-preview")); identify(); });
    $("identify-form").addEventListener("submit", identify);
    $("enrol-photos").addEventListener("change", () => preview($("enrol-photos"), $("enrol-preview")));
    $("enrol-form").addEventListener("submit", enrol);
    refreshStatus();
  });
})();
