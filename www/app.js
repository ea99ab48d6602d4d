// The demo page: loads a model (and adapter) into lorb's Rescorer, rescores n-best lists and
// shows WER before and after. The Rescorer runs in a Web Worker ("lorb/worker": WebGPU or CPU
// there), so the page stays responsive while it computes; `?worker=off` runs it on this page's
// thread instead ("lorb"). Everything stays in the browser.
import init, { webgpuInfo, wordErrors } from "lorb";
import * as inWorker from "lorb/worker";
import * as onPage from "lorb";
import { lineChart } from "./chart.js";

const $ = (id) => document.getElementById(id);
// The served model and adapter; `?model=URL/&adapter=URL/` (or `adapter=none`) override them,
// `?truncate` cuts over-long hypotheses, `?limit=N` keeps the first N utterances, `?depth=K`
// rescores the top K hypotheses.
const params = new URLSearchParams(location.search);
const { Rescorer, CancelToken } = params.get("worker") === "off" ? onPage : inWorker;
const DEFAULT = {
  model: params.get("model") || "../models/all-MiniLM-L6-v2/",
  adapter: params.get("adapter") === "none" ? null : params.get("adapter") || "../adapters/minilm-blstm-lorb/",
};
let rescorer = null;
// The Rescorer's methods take it mutably: one call at a time (a second concurrent call would be
// refused by wasm-bindgen), so every call goes through this queue.
let queue = Promise.resolve();
const exclusive = (f) => {
  const p = queue.then(f);
  queue = p.catch(() => {});
  return p;
};
let lists = [];
let results = new Map();

// The wasm module, then what WebGPU offers here (shown before anything is loaded).
const ready = init();
ready.then(async () => {
  const info = await webgpuInfo();
  const el = $("gpu-info");
  el.dataset.available = info.available;
  if (info.available) {
    const a = info.adapter;
    el.textContent = `WebGPU: ${a.name || "adapter"} (${a.backend}${a.software ? ", software: correct but slow" : ""}), ` +
      `f16 ${a.f16 ? "yes" : "no"}, largest binding ${(a.maxStorageBufferBindingSize / 2 ** 20).toFixed(0)} MiB.`;
    // f16 weights need the adapter's shader-f16.
    $("dtype").querySelector('option[value="f16"]').disabled = !a.f16;
  } else {
    el.textContent = `No usable WebGPU (${info.reason}): "WebGPU if available" will compute on the CPU.`;
  }
}).catch((e) => showError(e));

function showError(e) {
  const box = $("error");
  box.hidden = false;
  box.textContent = `${e && e.kind ? `[${e.kind}] ` : ""}${e && e.message ? e.message : e}`;
  box.dataset.kind = (e && e.kind) || "unknown";
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function progressReporter(bar, status) {
  const files = new Map();
  bar.hidden = false;
  return (label, loaded, total) => {
    files.set(label, { loaded, total: total || loaded });
    let l = 0, t = 0;
    for (const f of files.values()) { l += f.loaded; t += f.total; }
    bar.max = t || 1;
    bar.value = l;
    status.textContent = `loading ${label}: ${(loaded / 1e6).toFixed(1)} MB${total ? ` of ${(total / 1e6).toFixed(1)} MB` : ""}`;
  };
}

async function sourcesFromFolder(fileList) {
  const byName = new Map([...fileList].map((f) => [f.name, f]));
  const bytes = async (name) => (byName.has(name) ? new Uint8Array(await byName.get(name).arrayBuffer()) : null);
  const need = ["config.json", "model.safetensors", "tokenizer.json"];
  const missing = need.filter((n) => !byName.has(n));
  if (missing.length) {
    const e = new Error(`the folder lacks ${missing.join(", ")}`);
    e.kind = "input";
    throw e;
  }
  const src = { config: await bytes("config.json"), weights: await bytes("model.safetensors"), tokenizer: await bytes("tokenizer.json") };
  if (byName.has("cls_head.safetensors")) src.head = await bytes("cls_head.safetensors");
  if (byName.has("adapter_config.json") && byName.has("adapter_model.safetensors")) {
    src.adapter = { config: await bytes("adapter_config.json"), weights: await bytes("adapter_model.safetensors") };
  }
  if (byName.has("train_log.json")) {
    const log = JSON.parse(new TextDecoder().decode(await bytes("train_log.json")));
    src.trainLog = log;
  }
  return src;
}

async function load() {
  clearError();
  $("load").disabled = true;
  const status = $("load-status");
  // A model loaded before is freed (and its worker ended) once its last call is done.
  if (rescorer) {
    const old = rescorer;
    rescorer = null;
    exclusive(() => old.free());
  }
  try {
    await ready;
    const source = document.querySelector("input[name=source]:checked").value;
    let src;
    if (source === "folder") {
      src = await sourcesFromFolder($("folder").files);
    } else {
      src = {
        config: DEFAULT.model + "config.json",
        weights: DEFAULT.model + "model.safetensors",
        tokenizer: DEFAULT.model + "tokenizer.json",
      };
      if (DEFAULT.adapter) {
        src.adapter = { config: DEFAULT.adapter + "adapter_config.json", weights: DEFAULT.adapter + "adapter_model.safetensors" };
        const log = await fetch(DEFAULT.adapter + "train_log.json");
        if (log.ok) src.trainLog = await log.json();
      }
    }
    if (src.trainLog) {
      if (typeof src.trainLog.weight === "number") $("weight").value = src.trainLog.weight;
      if (typeof src.trainLog.depth === "number") $("depth").value = src.trainLog.depth;
      if (typeof src.trainLog.lexicon_weight === "number") $("p-lexicon").value = src.trainLog.lexicon_weight;
    }
    if (params.get("depth")) $("depth").value = Math.max(1, Number(params.get("depth")) | 0);
    const started = performance.now();
    rescorer = await Rescorer.load({ ...src, backend: $("backend").value, dtype: $("dtype").value, truncate: params.has("truncate"), onProgress: progressReporter($("load-progress"), status) });
    const caps = await rescorer.capabilities();
    status.textContent = `loaded in ${((performance.now() - started) / 1000).toFixed(1)} s — ${caps.arch}, ${caps.layers} layers, hidden ${caps.hidden}, on ${caps.backend}` +
      (caps.gpu ? ` (weights in ${caps.dtype})` : `, ${caps.threads} thread${caps.threads === 1 ? "" : "s"} (no hardware WebGPU adapter: the CPU computes the same scores)`);
    status.dataset.threads = caps.threads;
    status.dataset.backend = caps.backend;
    status.dataset.dtype = caps.dtype;
    setMethods(caps);
    $("data").hidden = false;
    $("training").hidden = false;
    $("personal").hidden = false;
    await loadLists();
  } catch (e) {
    showError(e);
    status.textContent = "not loaded";
  } finally {
    $("load").disabled = false;
  }
}

// s2 is the CLS score when the model (or its adapter) has a CLS head, else the PLL from its
// masked-LM head; training adds a CLS head.
function setMethods(caps) {
  const m = $("method");
  m.querySelector("option[value=cls]").disabled = !caps.clsHead;
  m.querySelector("option[value=pll]").disabled = !caps.mlmHead;
  m.value = caps.clsHead ? "cls" : caps.mlmHead ? "pll" : "cls";
}

function parseJsonl(text) {
  return text.split("\n").filter((l) => l.trim()).map((l, i) => {
    try {
      return JSON.parse(l);
    } catch (e) {
      const err = new Error(`n-best file, line ${i + 1}: ${e.message}`);
      err.kind = "input";
      throw err;
    }
  });
}

async function loadLists() {
  const file = $("nbest-file").files[0];
  const text = file ? await file.text() : await (await fetch($("sample").value)).text();
  lists = parseJsonl(text);
  // `?limit=N`: the first N utterances only (quick checks).
  if (params.get("limit")) lists = lists.slice(0, Math.max(1, Number(params.get("limit")) | 0));
  results = new Map();
  const sel = $("utt");
  sel.innerHTML = "";
  lists.forEach((l, i) => {
    const o = document.createElement("option");
    o.value = i;
    o.textContent = `${l.utt || i + 1} — ${l.hyps.length} hypotheses`;
    sel.appendChild(o);
  });
  $("rescore-all").disabled = false;
  $("summary").textContent = `${lists.length} utterances loaded.`;
  updateCorrected();
  fillChapters();
  await showUtterance(0);
}

function options() {
  return { weight: Number($("weight").value), depth: Math.max(1, Number($("depth").value) | 0), method: $("method").value };
}

async function rescoreOne(i) {
  const o = options();
  const key = `${i}|${o.weight}|${o.depth}|${o.method}`;
  if (!results.has(key)) {
    const l = lists[i];
    const cut = { ...l, hyps: l.hyps.slice(0, o.depth) };
    results.set(key, await exclusive(() => rescorer.rescore(cut, { weight: o.weight, method: o.method })));
  }
  return results.get(key);
}

const wer = (errors, words) => (words ? (100 * errors) / words : 0);

async function showUtterance(i) {
  clearError();
  try {
    const r = await rescoreOne(i);
    const rows = r.hyps.map((h, k) => `<tr class="${k === 0 ? "best" : h.firstRank === 0 ? "first" : ""}">
      <td class="num">${k + 1}</td><td class="num">${h.firstRank + 1}</td><td>${escape(h.text)}</td>
      <td class="num">${h.s1.toFixed(2)}</td><td class="num">${h.s2.toFixed(3)}</td><td class="num">${h.total.toFixed(2)}</td>
      <td class="num">${h.errors ?? ""}</td><td><button class="use" data-text="${escape(h.text)}" title="make this the transcript">use</button></td></tr>`).join("");
    const words = r.words || 0;
    const d = $("detail");
    d.dataset.utt = i;
    d.dataset.firstPassErrors = r.firstPassErrors ?? "";
    d.innerHTML = `
      <div class="ref">transcript (reference): <input id="ref-edit" size="90" value="${escape(lists[i].ref || "")}">
        <button id="ref-save">Save correction</button>${lists[i].corrected ? ' <span class="tag">corrected by you</span>' : ""}</div>
      <div class="ref">first pass: ${r.firstPassErrors ?? "?"} errors (WER ${wer(r.firstPassErrors, words).toFixed(1)}%) →
        rescored: ${r.rescoredErrors ?? "?"} errors (WER ${wer(r.rescoredErrors, words).toFixed(1)}%), λ = ${r.weight}</div>
      <table><thead><tr><th>new rank</th><th>first-pass rank</th><th>hypothesis</th><th>s1</th><th>s2</th><th>s1 + λ·s2</th><th>errors</th><th></th></tr></thead>
      <tbody>${rows}</tbody></table>`;
    $("ref-save").onclick = () => correct(i, $("ref-edit").value);
    d.querySelectorAll("button.use").forEach((b) => (b.onclick = () => correct(i, b.dataset.text)));
  } catch (e) {
    showError(e);
  }
}

// A corrected transcript becomes the list's reference: its WER and the training data follow it.
function correct(i, text) {
  const ref = text.trim().replace(/\s+/g, " ");
  if (ref === (lists[i].ref || "")) return showUtterance(i);
  lists[i] = { ...lists[i], ref, corrected: true };
  // The scores do not depend on the reference: only the errors are counted again.
  for (const [k, r] of results) {
    if (!k.startsWith(`${i}|`)) continue;
    const hyps = r.hyps.map((h) => ({ ...h, errors: wordErrors(ref, h.text).errors }));
    const first = hyps.find((h) => h.firstRank === 0);
    results.set(k, { ...r, ref, hyps, words: wordErrors(ref, "").words, firstPassErrors: first.errors, rescoredErrors: hyps[0].errors });
  }
  const sum = $("summary");
  delete sum.dataset.rescoredWer;
  delete sum.dataset.firstPassWer;
  delete sum.dataset.msPerList;
  sum.textContent = `${lists.length} utterances; a transcript changed: "Rescore all" again for the WER summary.`;
  updateCorrected();
  return showUtterance(i);
}

function updateCorrected() {
  const n = lists.filter((l) => l.corrected).length;
  $("t-corrected").textContent = n ? `${n} transcript${n > 1 ? "s" : ""} corrected by you.` : "";
  $("t-only-corrected").disabled = n === 0;
  if (!n) $("t-only-corrected").checked = false;
  $("download-lists").disabled = n === 0;
}

function escape(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
}

async function rescoreAll() {
  clearError();
  $("rescore-all").disabled = true;
  const bar = $("all-progress");
  bar.hidden = false;
  bar.max = lists.length;
  const started = performance.now();
  let words = 0, first = 0, rescored = 0, oracle = 0;
  try {
    for (let i = 0; i < lists.length; i++) {
      const r = await rescoreOne(i);
      words += r.words || 0;
      first += r.firstPassErrors || 0;
      rescored += r.rescoredErrors || 0;
      oracle += Math.min(...r.hyps.map((h) => h.errors ?? Infinity));
      bar.value = i + 1;
      $("summary").textContent = `rescoring ${i + 1} / ${lists.length}…`;
    }
    const ms = (performance.now() - started) / lists.length;
    const s = $("summary");
    s.dataset.firstPassWer = wer(first, words);
    s.dataset.rescoredWer = wer(rescored, words);
    s.dataset.msPerList = ms;
    s.innerHTML = `${lists.length} utterances, ${words} words: first-pass WER <b id="wer-first">${wer(first, words).toFixed(2)}%</b> →
      rescored WER <b id="wer-rescored">${wer(rescored, words).toFixed(2)}%</b> (oracle ${wer(oracle, words).toFixed(2)}%),
      ${ms.toFixed(0)} ms per list`;
  } catch (e) {
    showError(e);
  } finally {
    $("rescore-all").disabled = false;
  }
}

// Training: LoRB on the loaded lists, with live curves; the adapter can be downloaded.
let token = null;
// The utterances the adapter in use was trained on here (section 3): personalising warns when
// they include the utterances it evaluates.
let trainedOn = new Set();

// The curves of a run: the loss of every step, the dev WER after every epoch (with the first
// pass's on the same lists, once the run reports it).
function plotCurves(losses, epochs, firstPassWer) {
  $("curves").hidden = false;
  lineChart($("loss-chart"), { title: "training loss", xLabel: "step", yLabel: "loss", integerX: true, series: [{ name: "loss per step", color: "#2a6ebb", points: losses.map((l, i) => [i + 1, l]) }] });
  const wer = [{ name: "dev WER after each epoch", color: "#c0392b", markers: true, points: epochs.map((e) => [e.epoch, e.devWer]) }];
  if (Number.isFinite(firstPassWer) && epochs.length) wer.push({ name: "first pass", color: "#777", dashed: true, points: [[Math.min(...epochs.map((e) => e.epoch)), firstPassWer], [Math.max(...epochs.map((e) => e.epoch)), firstPassWer]] });
  lineChart($("wer-chart"), { title: "dev WER (%)", xLabel: "epoch", yLabel: "WER %", integerX: true, series: wer });
}

async function train() {
  clearError();
  const depth = options().depth;
  const chosen = lists.filter((l) => l.ref && (!$("t-only-corrected").checked || l.corrected));
  const examples = chosen.map(({ corrected, ...l }) => ({ ...l, hyps: l.hyps.slice(0, depth) }));
  chosen.forEach((l) => trainedOn.add(l.utt));
  const losses = [];
  const epochs = [];
  const devCurve = [];
  const bar = $("t-progress");
  bar.hidden = false;
  token = new CancelToken();
  $("train").disabled = true;
  $("cancel").disabled = false;
  $("t-status").textContent = `training on ${examples.length} lists…`;
  $("t-status").dataset.state = "running";
  const opts = { epochs: Number($("t-epochs").value), lr: Number($("t-lr").value), kappa: Number($("t-kappa").value), batch: 4, depth };
  // The library holds none out below 10 lists.
  opts.devFraction = Math.min(0.5, Math.max(0, Number($("t-dev").value) / 100));
  try {
    const r = await exclusive(() => rescorer.train(examples, opts, (p) => {
      if (p.type === "epoch") {
        if (p.devWer !== null) {
          epochs.push(`epoch ${p.epoch}: dev WER ${p.devWer.toFixed(2)}% (λ ${p.weight})`);
          devCurve.push({ epoch: p.epoch, devWer: p.devWer });
          plotCurves(losses, devCurve);
        }
        return;
      }
      losses.push(p.loss);
      bar.max = p.total;
      bar.value = p.step;
      $("t-status").textContent = `step ${p.step} / ${p.total} (epoch ${p.epoch}), loss ${p.loss.toFixed(4)}${epochs.length ? "; " + epochs.join("; ") : ""}`;
      plotCurves(losses, devCurve);
    }, token));
    $("weight").value = r.weight;
    plotCurves(losses, devCurve, r.devLists ? r.devFirstPassWer : NaN);
    const dev = r.devLists
      ? `dev WER on ${r.devLists} held-out lists ${r.devFirstPassWer.toFixed(2)}% → ${r.devWer.toFixed(2)}% (best epoch ${r.bestEpoch}), λ = ${r.weight} tuned on them`
      : `no lists held out, λ = 1/κ = ${r.weight}`;
    $("t-status").textContent = `trained on ${r.trainLists} lists: ${r.steps} steps, ${r.trainableParameters} trainable parameters; ${dev}. The adapter is now in use: rescore again to see its effect.`;
    $("t-status").dataset.state = "done";
    $("t-status").dataset.weight = r.weight;
    setMethods(await exclusive(() => rescorer.capabilities()));
    results = new Map();
    showUtterance(Number($("utt").value) || 0);
  } catch (e) {
    $("t-status").dataset.state = e && e.kind === "cancelled" ? "cancelled" : "failed";
    if (e && e.kind === "cancelled") {
      $("t-status").textContent = `training cancelled (${e.message}); the best adapter so far (the last completed step's when no epoch has ended) is in use and can be downloaded.`;
      const caps = await exclusive(() => rescorer.capabilities());
      $("weight").value = caps.weight;
      setMethods(caps);
      results = new Map();
      showUtterance(Number($("utt").value) || 0);
    } else {
      showError(e);
      $("t-status").textContent = "training failed";
    }
  } finally {
    $("train").disabled = false;
    $("cancel").disabled = true;
    $("download").disabled = false;
  }
}

// Personalisation on one chapter: its first utterances (their transcripts corrected) train a
// personal adapter from the one in use; the rest of the chapter is rescored before and after.
// `Rescorer.personalize` is the function `lorb personalize` runs for every chapter.

// Chapters in order of first appearance, each with its lists' indices in file order (the lists
// whose ids are not SPEAKER-CHAPTER-N form one more group, "other lists").
function chapters() {
  const out = new Map();
  lists.forEach((l, i) => {
    const parts = String(l.utt || "").split("-");
    const key = parts.length >= 3 && parts.every((p) => p) ? `${parts[0]}-${parts[1]}` : "other lists";
    if (!out.has(key)) out.set(key, []);
    out.get(key).push(i);
  });
  return out;
}

function fillChapters() {
  const sel = $("p-chapter");
  sel.innerHTML = "";
  for (const [key, idx] of chapters()) {
    if (idx.length < 2) continue;
    const o = document.createElement("option");
    o.value = key;
    o.textContent = `${key} (${idx.length} utterances)`;
    sel.appendChild(o);
  }
  chapterChanged();
}

function chapterChanged() {
  const idx = chapters().get($("p-chapter").value) || [];
  $("p-count").max = Math.max(1, idx.length - 1);
  $("p-count").value = Math.max(1, Math.floor(idx.length / 2));
  $("p-run").disabled = idx.length < 2;
}

// The chapter's corrected lists (its first p-count) and the rest.
function chapterSplit() {
  const idx = chapters().get($("p-chapter").value) || [];
  const k = Math.min(Math.max(1, Number($("p-count").value) | 0), idx.length - 1);
  return { adapt: idx.slice(0, k), evaluated: idx.slice(k) };
}

function useReferences() {
  const { adapt } = chapterSplit();
  const missing = adapt.filter((i) => !lists[i].ref).length;
  for (const i of adapt) if (lists[i].ref) lists[i] = { ...lists[i], corrected: true };
  updateCorrected();
  $("p-status").textContent = `${adapt.length - missing} transcripts taken as corrected${missing ? `; ${missing} have no reference: correct them above` : ""}.`;
  showUtterance(Number($("utt").value) || 0);
}

// The words of `b` that `a` lacks (a longest common subsequence of words), marked.
function markChanges(a, b) {
  const x = a.split(" "), y = b.split(" ");
  const L = Array.from({ length: x.length + 1 }, () => new Array(y.length + 1).fill(0));
  for (let i = x.length - 1; i >= 0; i--) for (let j = y.length - 1; j >= 0; j--) L[i][j] = x[i] === y[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (j < y.length) {
    if (i < x.length && x[i] === y[j]) {
      out.push(escape(y[j++]));
      i++;
    } else if (i < x.length && L[i + 1][j] >= L[i][j + 1]) {
      i++;
    } else {
      out.push(`<mark>${escape(y[j++])}</mark>`);
    }
  }
  return out.join(" ");
}

async function personalize() {
  clearError();
  const { adapt, evaluated } = chapterSplit();
  const status = $("p-status");
  const uncorrected = adapt.filter((i) => !lists[i].corrected || !lists[i].ref);
  if (uncorrected.length) {
    status.textContent = `correct the chapter's first ${adapt.length} transcripts first (${uncorrected.length} are not), or take their references as corrections.`;
    status.dataset.state = "failed";
    return;
  }
  const noRef = evaluated.filter((i) => !lists[i].ref).length;
  if (noRef) {
    status.textContent = `${noRef} of the utterances to evaluate have no transcript: correct them above to measure their WER.`;
    status.dataset.state = "failed";
    return;
  }
  const seen = evaluated.filter((i) => trainedOn.has(lists[i].utt)).length;
  const depth = options().depth;
  const strip = (i) => { const { corrected, ...l } = lists[i]; return { ...l, hyps: l.hyps.slice(0, depth) }; };
  const opts = { adapt: $("p-adapt").value, epochs: Number($("p-epochs").value), lr: Number($("p-lr").value), kappa: Number($("t-kappa").value), weight: options().weight, lexiconWeight: Number($("p-lexicon").value), depth };
  status.textContent = `training on ${adapt.length} corrected utterances, then rescoring ${evaluated.length}…`;
  status.dataset.state = "running";
  $("p-run").disabled = true;
  try {
    const r = await exclusive(() => rescorer.personalize(adapt.map(strip), evaluated.map(strip), opts));
    const res = $("p-result");
    Object.assign(res.dataset, { firstPassWer: r.firstPassWer, baseWer: r.baseWer, lexiconWer: r.lexiconWer, adapterWer: r.adapterWer, personalizedWer: r.personalizedWer, userWords: JSON.stringify(r.userWords), adaptUtterances: JSON.stringify(r.adaptUtterances), evalUtterances: JSON.stringify(r.evalUtterances) });
    const rows = evaluated.map((li, k) => ({ l: lists[li], before: lists[li].hyps[r.baseChoices[k]].text, after: lists[li].hyps[r.personalChoices[k]].text }))
      .filter((x) => x.before !== x.after)
      .map((x) => `<tr><td>${escape(x.l.utt || "")}</td><td>${escape(x.l.ref || "")}</td><td>${markChanges(x.after, x.before)}</td><td>${markChanges(x.before, x.after)}</td></tr>`).join("");
    res.innerHTML = `<div class="ref">the rest of ${escape($("p-chapter").value)}: ${r.evalUtterances.length} utterances, ${r.words} words — first pass WER ${r.firstPassWer.toFixed(2)}%,
      with the adapter in use <b id="p-before">${r.baseWer.toFixed(2)}%</b>, personalised <b id="p-after">${r.personalizedWer.toFixed(2)}%</b> (λ = ${r.weight}, β = ${r.lexiconWeight}:
      your words alone ${r.lexiconWer.toFixed(2)}%${r.adapt === "none" ? "" : `, the personal adapter alone ${r.adapterWer.toFixed(2)}%`})</div>
      <div class="ref">your words (rarest first): ${r.userWords.length ? escape(r.userWords.slice(0, 30).join(", ")) + (r.userWords.length > 30 ? ", …" : "") : "none rare enough"}</div>` +
      (rows ? `<table><thead><tr><th>utterance</th><th>transcript</th><th>before</th><th>after</th></tr></thead><tbody>${rows}</tbody></table>` : "<p>No evaluated utterance changed its choice.</p>");
    status.textContent = `personalised in ${r.seconds.toFixed(1)} s on ${r.adaptUtterances.length} corrected utterances` +
      (r.adapt === "none" ? " (no training)." : `; the personal adapter is now in use ("Download adapter" above saves it).`) +
      (seen ? ` Note: the adapter it started from was trained above on ${seen} of the ${evaluated.length} evaluated utterances, so both WERs flatter it.` : "");
    status.dataset.seen = seen;
    status.dataset.state = "done";
    if (r.adapt !== "none") $("download").disabled = false;
    setMethods(await exclusive(() => rescorer.capabilities()));
    $("method").value = r.adapt === "mlm" ? "pll" : "cls";
    results = new Map();
    showUtterance(Number($("utt").value) || 0);
  } catch (e) {
    status.dataset.state = "failed";
    status.textContent = "personalising failed";
    showError(e);
  } finally {
    $("p-run").disabled = false;
  }
}

function download(name, bytes) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([bytes]));
  a.download = name;
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

$("train").addEventListener("click", train);
$("cancel").addEventListener("click", () => token && token.cancel());
// Through the queue: a rescoring still running (the view refreshed after training) holds the
// Rescorer, and wasm-bindgen refuses a second use meanwhile.
$("download").addEventListener("click", () => exclusive(async () => {
  const a = await rescorer.exportAdapter();
  download("adapter_config.json", a.config);
  download("adapter_model.safetensors", a.weights);
}).catch(showError));
$("download-lists").addEventListener("click", () => {
  const text = lists.map(({ corrected, ...l }) => JSON.stringify(l)).join("\n") + "\n";
  download("nbest-corrected.jsonl", new TextEncoder().encode(text));
});
$("load").addEventListener("click", load);
$("p-chapter").addEventListener("change", chapterChanged);
$("p-use-refs").addEventListener("click", useReferences);
$("p-run").addEventListener("click", () => personalize());
$("rescore-all").addEventListener("click", rescoreAll);
$("utt").addEventListener("change", (e) => showUtterance(Number(e.target.value)));
$("method").addEventListener("change", () => showUtterance(Number($("utt").value) || 0));
$("sample").addEventListener("change", () => rescorer && loadLists());
$("nbest-file").addEventListener("change", () => rescorer && loadLists().catch(showError));
window.addEventListener("unhandledrejection", (e) => showError(e.reason));
