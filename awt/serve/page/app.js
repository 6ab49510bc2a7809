// The page of awt serve: choose images and classes, see each image's ranked classes (and, where
// the server has them, their explanation). Talks to the same API as any client; no other origin.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, files: [], urls: [] };

function headers() {
  const key = sessionStorage.getItem("awt-key");
  return key ? { Authorization: "Bearer " + key } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  let body = null;
  try { body = await response.json(); } catch (e) { body = { error: response.statusText || "no answer" }; }
  if (response.status === 401) {
    $("key-row").hidden = false;
  }
  return { status: response.status, ok: response.ok, body };
}

function say(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

async function load() {
  const info = await api("/v1/info");
  if (!info.ok) { say(info.body.error || "the server did not answer", true); return; }
  state.info = info.body;
  const m = info.body.model || {};
  $("model").textContent = `${m.model || "model"}${m.pretrained ? " (" + m.pretrained + ")" : ""} · ` +
    `${m.views} views · batches of ${info.body.batch_size}`;
  const method = $("method");
  for (const entry of info.body.methods) {
    const option = new Option(entry.name, entry.name, false, entry.name === info.body.defaults.method);
    option.title = entry.summary;
    method.add(option);
  }
  $("top-k").value = info.body.defaults.top_k;
  await loadSets();
}

async function loadSets() {
  const sets = await api("/v1/class-sets");
  const select = $("set");
  select.replaceChildren();
  const list = sets.ok ? sets.body.class_sets : [];
  for (const set of list) {
    const label = `${set.name || set.id} (${set.classes} classes${set.origin === "startup" ? ", default" : ""})`;
    select.add(new Option(label, set.id));
  }
  if (!list.length) {
    select.add(new Option("no class set registered: type classes", ""));
    document.querySelector("input[name=source][value=typed]").checked = true;
  }
  showSource();
}

function showSource() {
  const typed = document.querySelector("input[name=source]:checked").value === "typed";
  $("classes").hidden = !typed;
  $("set").hidden = typed;
}

function choose(files) {
  state.files = Array.from(files).filter((f) => f.type.startsWith("image/") || f.name);
  const n = state.files.length;
  $("chosen").textContent = n ? `${n} image${n > 1 ? "s" : ""}: ${state.files.map((f) => f.name).join(", ")}` : "";
}

function fields(form) {
  const typed = document.querySelector("input[name=source]:checked").value === "typed";
  if (typed) {
    const classes = $("classes").value.trim();
    if (!classes) return "type at least one class, one per line";
    form.append("classes", classes);
  } else if ($("set").value) {
    form.append("class_set", $("set").value);
  }
  form.append("method", $("method").value);
  form.append("top_k", $("top-k").value);
  return null;
}

async function classify(event) {
  event.preventDefault();
  if ($("key-row").hidden === false && $("key").value) {
    sessionStorage.setItem("awt-key", $("key").value);
    if (!state.info) await load();   // the first answers were 401s: ask again, with the key
    if (!state.info) return;
  }
  if (!state.files.length) { say("choose an image first", true); return; }
  const form = new FormData();
  for (const file of state.files) form.append("image", file, file.name);
  const problem = fields(form);
  if (problem) { say(problem, true); return; }
  $("go").disabled = true;
  say("classifying…");
  const started = performance.now();
  try {
    const answer = await api("/v1/classify", { method: "POST", body: form });
    const results = answer.body.results;
    if (!answer.ok && !results) { say(answer.body.error, true); return; }
    show(results, state.files.slice());
    const seconds = ((performance.now() - started) / 1000).toFixed(2);
    say(answer.ok ? `${results.length} image${results.length > 1 ? "s" : ""} in ${seconds} s (${answer.body.method})`
                  : answer.body.error, !answer.ok);
  } catch (e) {
    say("the server did not answer: " + e.message, true);
  } finally {
    $("go").disabled = false;
  }
}

function show(results, files) {
  for (const url of state.urls) URL.revokeObjectURL(url);
  state.urls = [];
  const area = $("results");
  area.replaceChildren();
  results.forEach((result, i) => {
    const card = $("result-card").content.firstElementChild.cloneNode(true);
    const url = URL.createObjectURL(files[i]);
    state.urls.push(url);
    card.querySelector("img").src = url;
    card.querySelector("img").alt = result.image;
    card.querySelector("h2").textContent = result.image;
    if (result.error) {
      const error = card.querySelector(".error");
      error.hidden = false;
      error.textContent = result.error;
    } else {
      const scores = result.predictions.map((p) => p.score);
      const top = Math.max(...scores), low = Math.min(...scores);
      for (const p of result.predictions) {
        const li = document.createElement("li");
        const fill = document.createElement("span");
        fill.className = "fill";
        fill.style.width = (top > low ? 15 + 85 * (p.score - low) / (top - low) : 100) + "%";
        const name = document.createElement("span");
        name.textContent = p.class;
        const score = document.createElement("span");
        score.className = "score";
        score.textContent = p.score.toFixed(3);
        li.append(fill, name, score);
        card.querySelector(".ranks").append(li);
      }
      if (state.info && state.info.explain) {
        const button = card.querySelector(".explain");
        button.hidden = false;
        button.addEventListener("click", () => explain(files[i], card));
      }
    }
    area.append(card);
  });
}

async function explain(file, card) {
  const form = new FormData();
  form.append("image", file, file.name);
  const problem = fields(form);
  if (problem) { say(problem, true); return; }
  const box = card.querySelector(".explanation");
  box.hidden = false;
  box.textContent = "explaining…";
  const answer = await api("/v1/explain", { method: "POST", body: form });
  if (!answer.ok) { box.textContent = answer.body.error; return; }
  const frame = document.createElement("iframe");
  frame.setAttribute("sandbox", "");   // the report is self-contained: no script, no request
  frame.title = "explanation of " + file.name;
  frame.srcdoc = answer.body.html;
  box.replaceChildren(frame);
}

function init() {
  const drop = $("drop");
  $("files").addEventListener("change", (e) => choose(e.target.files));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => choose(e.dataTransfer.files));
  for (const radio of document.querySelectorAll("input[name=source]")) radio.addEventListener("change", showSource);
  $("form").addEventListener("submit", classify);
  load().catch((e) => say("the server did not answer: " + e.message, true));
}

init();
