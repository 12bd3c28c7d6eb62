// imgd's page script: live dashboard updates over Server-Sent Events, and the forms that
// change something (naming faces and identities, merging, splitting), sent with the token.
"use strict";

const token = document.querySelector('meta[name="imgd-token"]')?.content;

function human(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${String(s % 60).padStart(2, "0")}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${String(Math.floor(s % 3600 / 60)).padStart(2, "0")}m`;
  return `${Math.floor(s / 86400)}d ${String(Math.floor(s % 86400 / 3600)).padStart(2, "0")}h`;
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function bar(row, percent) {
  const td = document.createElement("td");
  const outer = document.createElement("div");
  outer.className = "bar";
  const inner = document.createElement("div");
  inner.style.width = `${percent}%`;
  outer.appendChild(inner);
  td.appendChild(outer);
  row.appendChild(td);
}

function percent(c) {
  const total = c.queued + c.leased + c.done + c.failed;
  return total ? (100 * (c.done + c.failed) / total).toFixed(1) : 0;
}

function failureText(failures) {
  return (failures || []).map((f) => `${f.module}: ${f.error} ×${f.count}`).join("; ");
}

function renderStatus(status) {
  if (status.error) return;
  document.getElementById("images-present").textContent = status.images.present;
  const t = status.throughput || {};
  document.getElementById("images-per-second").textContent = (t.images_per_second || 0).toFixed(2);
  document.getElementById("eta").textContent = human(t.eta_seconds);
  document.getElementById("paused").hidden = !status.paused;
  for (const [name, c] of Object.entries(status.modules)) {
    const row = document.getElementById(`module-${name}`);
    if (!row) continue;
    const rate = t.modules?.[name] || {};
    row.querySelector('[data-f="bar"]').style.width = `${percent(c)}%`;
    const waiting = row.querySelector('[data-f="waiting"]');
    waiting.hidden = !status.waiting?.[name];
    waiting.title = status.waiting?.[name] || "";
    row.querySelector('[data-f="done"]').textContent = c.done;
    const failed = row.querySelector('[data-f="failed"]');
    failed.textContent = "";
    if (c.failed > 0) {
      const a = document.createElement("a");
      a.href = `/search?failed=${encodeURIComponent(name)}`;
      a.textContent = c.failed;
      failed.appendChild(a);
    } else failed.textContent = "0";
    row.querySelector('[data-f="queued"]').textContent = c.queued;
    row.querySelector('[data-f="leased"]').textContent = c.leased;
    row.querySelector('[data-f="rate"]').textContent = (rate.jobs_per_second || 0).toFixed(2);
    row.querySelector('[data-f="eta"]').textContent = human(rate.eta_seconds);
  }
  const failures = document.getElementById("failures");
  failures.textContent = "";
  for (const f of status.top_failures || []) {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = `/search?failed=${encodeURIComponent(f.module)}`;
    a.textContent = f.module;
    li.append(a, `: ${f.error} `);
    const b = document.createElement("b");
    b.textContent = `×${f.count}`;
    li.appendChild(b);
    failures.appendChild(li);
  }
  if (!failures.children.length) {
    const li = document.createElement("li");
    li.className = "none";
    li.textContent = "none";
    failures.appendChild(li);
  }
  const batches = document.getElementById("batches");
  batches.textContent = "";
  for (const b of status.batches || []) {
    const row = document.createElement("tr");
    cell(row, b.scanning ? `${b.id} (scanning)` : b.id);
    cell(row, b.roots.join(", "));
    bar(row, percent(b.total));
    cell(row, b.total.done);
    cell(row, b.total.failed);
    cell(row, b.total.queued);
    cell(row, b.jobs_per_second.toFixed(2));
    cell(row, human(b.eta_seconds));
    cell(row, failureText(b.top_failures));
    batches.appendChild(row);
  }
  const workers = document.getElementById("workers");
  workers.textContent = "";
  for (const w of status.workers || []) {
    const row = document.createElement("tr");
    cell(row, w.host);
    cell(row, w.pid);
    cell(row, w.state);
    cell(row, w.images);
    cell(row, w.images_per_second.toFixed(2));
    cell(row, new Date(w.heartbeat_ms).toISOString().slice(11, 19) + " UTC");
    workers.appendChild(row);
  }
  const inference = status.inference;
  if (inference) {
    const share = inference.uptime_seconds > 0 ? inference.busy_seconds / inference.uptime_seconds : 0;
    document.getElementById("busy-share").textContent = `${(100 * share).toFixed(1)} %`;
    const models = document.getElementById("models");
    models.textContent = "";
    for (const [name, m] of Object.entries(inference.models)) {
      const row = document.createElement("tr");
      cell(row, name);
      cell(row, m.batches);
      cell(row, m.batches ? (m.items / m.batches).toFixed(1) : "-");
      cell(row, Object.entries(m.close_reasons).map(([r, n]) => `${r} ${n}`).join(", "));
      models.appendChild(row);
    }
  }
}

function liveDashboard() {
  const section = document.getElementById("dashboard");
  if (!section) return;
  const live = document.getElementById("live");
  const connect = () => {
    // EventSource reconnects by itself after a dropped connection; a refused one (a proxy's
    // 502 while the daemon restarts) closes it for good, so then a new one is made.
    const source = new EventSource(section.dataset.events);
    source.onopen = () => live.classList.add("on");
    source.onmessage = (event) => renderStatus(JSON.parse(event.data));
    source.onerror = () => {
      live.classList.remove("on");
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
    };
  };
  connect();
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json", ...(token ? { Authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(answer.error || `${response.status} ${response.statusText}`);
  return answer;
}

function showError(form, error) {
  let note = form.querySelector(".error");
  if (!note) {
    note = document.createElement("span");
    note.className = "error";
    form.appendChild(note);
  }
  note.textContent = ` ${error.message}`;
}

function onSubmit(selector, handler) {
  for (const form of document.querySelectorAll(selector)) {
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!token) {
        showError(form, new Error("open this page once with ?token=TOKEN to make changes"));
        return;
      }
      try {
        await handler(form);
        location.reload();
      } catch (error) {
        showError(form, error);
      }
    });
  }
}

function forms() {
  onSubmit("form.name-face", (f) => post(`/api/faces/${f.dataset.face}/name`, { name: f.elements.name.value }));
  onSubmit("form.name-identity", (f) => post(`/api/identities/${f.dataset.identity}/name`, { name: f.elements.name.value }));
  onSubmit("form.merge-identity", (f) => post(`/api/identities/${f.dataset.identity}/merge`, { from: Number(f.elements.from.value) }));
  onSubmit("form.split-identity", (f) => post(`/api/identities/${f.dataset.identity}/split`, {
    faces: [...f.querySelectorAll('input[name="face"]:checked')].map((c) => Number(c.value)),
  }));
}

liveDashboard();
forms();
