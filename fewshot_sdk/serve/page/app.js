// The page of `fewshot serve`: plain JavaScript against the service's own API, no build step, no network
// beyond the server that sent it. Every server error is shown where the action was taken, as the server
// worded it ({"error": "..."}).
"use strict";

const $ = (id) => document.getElementById(id);
const boxFiles = new Map(); // class box element -> File[]
let camera = null; // the webcam's MediaStream while it runs
let shownTask = null; // the selected task as GET /tasks/{id} last answered it

function apiKey() {
  return $("api-key").value.trim();
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (apiKey()) headers.set("X-API-Key", apiKey());
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error) message = body.error;
    } catch (_) { /* not JSON: keep the status line */ }
    throw new Error(message);
  }
  return response;
}

function show(id, text) {
  $(id).textContent = text || "";
}

async function guarded(prefix, work) {
  show(`${prefix}-error`, "");
  try {
    await work();
  } catch (error) {
    show(`${prefix}-status`, "");
    show(`${prefix}-error`, error.message);
  }
}

// ------------------------------------------------------------------ tasks
function selectedTask() {
  return $("task-select").value;
}

// Whether a task (as the API answers it) was made with test-time fine-tuning: adapt_options {"finetune": "auto"}.
function fineTuned(task) {
  const finetune = task && task.adapt_options ? task.adapt_options.finetune : null;
  return Boolean(finetune) && finetune !== "none";
}

// The selected task as last shown, if it is still the selected one.
function selectedShown() {
  return shownTask && shownTask.id === selectedTask() ? shownTask : null;
}

function taskLabel(task) {
  const names = task.classes.map((c) => c.name);
  const shown = names.length > 4 ? names.slice(0, 4).join(", ") + ", ..." : names.join(", ");
  return `${shown} (${task.id})`;
}

async function refreshTasks(select) {
  const { tasks } = await (await api("/tasks")).json();
  const menu = $("task-select");
  const keep = select || menu.value;
  menu.replaceChildren();
  if (tasks.length === 0) menu.append(new Option("(no task yet: create one below)", ""));
  for (const task of tasks) menu.append(new Option(taskLabel(task), task.id));
  if (tasks.some((t) => t.id === keep)) menu.value = keep;
  await showTask();
}

async function showTask() {
  const id = selectedTask();
  $("task-details").hidden = !id;
  if (!id) {
    shownTask = null;
    return;
  }
  const task = await (await api(`/tasks/${id}`)).json();
  shownTask = task;
  const threshold = task.threshold === null ? "none (answers always name a class)" : task.threshold.toFixed(3);
  const tuning = fineTuned(task) ? "fine-tuned on its photos" : "not fine-tuned";
  show(
    "task-summary",
    `${task.classes.length} classes, ${task.method}, ${tuning}, "none of these" threshold: ${threshold}`,
  );
  const list = $("task-classes");
  list.replaceChildren();
  for (const c of task.classes) {
    const item = document.createElement("li");
    const label = document.createElement("span");
    label.textContent = c.count === null ? c.name : `${c.name} (${c.count} photo${c.count === 1 ? "" : "s"})`;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "Remove";
    remove.setAttribute("aria-label", `Remove class ${c.name}`);
    remove.addEventListener("click", () => guarded("task", () => removeClass(c.name)));
    item.append(label, " ", remove);
    list.append(item);
  }
}

async function removeClass(name) {
  const again = fineTuned(selectedShown()) ? " and fine-tuning again on the photos left" : "";
  show("task-status", `Removing ${name}${again}...`);
  await api(`/tasks/${selectedTask()}/classes/remove`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ classes: [name] }),
  });
  await refreshTasks();
  show("task-status", `Removed ${name}.`);
}

async function deleteTask() {
  const id = selectedTask();
  if (!id || !window.confirm(`Delete task ${id}?`)) return;
  await api(`/tasks/${id}`, { method: "DELETE" });
  await refreshTasks("");
  show("task-status", `Deleted task ${id}.`);
}

async function downloadOnnx() {
  const id = selectedTask();
  if (!id) throw new Error("select a task first");
  show("task-status", "Exporting the task to ONNX...");
  const blob = await (await api(`/tasks/${id}/onnx`)).blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = `task-${id}.onnx`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  show("task-status", `Downloaded task-${id}.onnx (${(blob.size / 1048576).toFixed(1)} MiB).`);
}

// ------------------------------------------------------------------ class boxes
function addBox(name = "") {
  const box = $("class-box-template").content.firstElementChild.cloneNode(true);
  box.querySelector(".class-name").value = name;
  boxFiles.set(box, []);
  const input = box.querySelector(".class-files");
  input.addEventListener("change", () => {
    addFiles(box, input.files);
    input.value = "";
  });
  wireDrop(box.querySelector(".drop"), (files) => addFiles(box, files));
  box.querySelector(".remove-box").addEventListener("click", () => {
    boxFiles.delete(box);
    box.remove();
  });
  $("class-boxes").append(box);
  return box;
}

function addFiles(box, files) {
  const images = [...files].filter((f) => f.type === "" || f.type.startsWith("image/"));
  boxFiles.get(box).push(...images);
  const thumbs = box.querySelector(".thumbs");
  for (const file of images) {
    const img = document.createElement("img");
    img.src = URL.createObjectURL(file);
    img.alt = file.name;
    img.title = file.name;
    thumbs.append(img);
  }
  const count = boxFiles.get(box).length;
  box.querySelector("legend").textContent = `Class (${count} photo${count === 1 ? "" : "s"})`;
}

function wireDrop(zone, onFiles) {
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer && event.dataTransfer.files.length) onFiles(event.dataTransfer.files);
  });
}

function classesForm() {
  const form = new FormData();
  let classes = 0;
  for (const [box, files] of boxFiles) {
    const name = box.querySelector(".class-name").value.trim();
    if (!name && files.length === 0) continue; // an empty box is left out
    if (!name) throw new Error("a class box with photos has no name: name it");
    if (files.length === 0) throw new Error(`class ${name} has no photos: drop some into its box`);
    for (const file of files) form.append(name, file, file.name);
    classes += 1;
  }
  return { form, classes };
}

function clearBoxes() {
  for (const box of [...boxFiles.keys()]) box.remove();
  boxFiles.clear();
  addBox();
  addBox();
}

function wantsFineTuning() {
  const box = $("finetune");
  return box.checked && !box.disabled;
}

async function createTask() {
  const { form, classes } = classesForm();
  if (classes < 2) throw new Error("a task needs two classes or more, each with a name and photos");
  const finetune = wantsFineTuning();
  show(
    "teach-status",
    finetune
      ? "Adapting to your photos and fine-tuning the network on them (a few seconds per task on a CPU)..."
      : "Adapting to your photos...",
  );
  const path = finetune ? "/tasks?finetune=auto" : "/tasks";
  const task = await (await api(path, { method: "POST", body: form })).json();
  clearBoxes();
  await refreshTasks(task.id);
  const tuned = fineTuned(task) ? ", fine-tuned on its photos" : "";
  show("teach-status", `Created task ${task.id} with ${task.classes.length} classes${tuned}.`);
}

async function addToTask() {
  const id = selectedTask();
  if (!id) throw new Error("select a task first, or create a new one");
  const { form, classes } = classesForm();
  if (classes < 1) throw new Error("name a class and give it photos first");
  // The server adapts the added classes the way the task was made: a fine-tuned task is fine-tuned again
  // on all of its photos, whatever the checkbox says (it applies to new tasks).
  const known = selectedShown();
  show(
    "teach-status",
    fineTuned(known)
      ? "Adding classes and fine-tuning the network again on all of the task's photos..."
      : "Adding classes...",
  );
  const task = await (await api(`/tasks/${id}/classes`, { method: "POST", body: form })).json();
  clearBoxes();
  await refreshTasks(id);
  let how = "";
  if (fineTuned(task)) how = ", fine-tuned again on its photos";
  else if (wantsFineTuning()) how = " (not fine-tuned: the checkbox applies to new tasks)";
  show("teach-status", `Task ${id} now has ${task.classes.length} classes${how}.`);
}

// ------------------------------------------------------------------ classifying
async function classify(file) {
  const id = selectedTask();
  if (!id) throw new Error("select or create a task first");
  $("query-thumb").src = URL.createObjectURL(file);
  $("result").hidden = false;
  show("answer", "");
  $("bars").replaceChildren();
  show("classify-status", "Classifying...");
  const form = new FormData();
  form.append("images", file, file.name || "snapshot.jpg");
  const answer = await (await api(`/tasks/${id}/predict`, { method: "POST", body: form })).json();
  showAnswer(answer);
  show("classify-status", "");
}

function showAnswer(answer) {
  const probs = answer.probs[0];
  const best = answer.indices[0];
  const percent = (p) => `${(100 * p).toFixed(1)}%`;
  const text = answer.rejected[0]
    ? `none of these (closest: ${answer.classes[best]}, ${percent(probs[best])})`
    : `${answer.class_names[0]} (${percent(probs[best])})`;
  show("answer", text);
  $("answer").classList.toggle("rejected", answer.rejected[0]);
  const order = probs.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]);
  const bars = $("bars");
  bars.replaceChildren();
  for (const [p, i] of order) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "bar-name";
    name.textContent = answer.classes[i];
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.setAttribute("role", "img");
    bar.setAttribute("aria-label", `${answer.classes[i]}: ${percent(p)}`);
    const fill = document.createElement("span");
    fill.style.width = `${Math.max(0.5, 100 * p)}%`;
    bar.append(fill);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = percent(p);
    item.append(name, bar, value);
    bars.append(item);
  }
}

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new Error("this browser offers no webcam here (it needs http://localhost or https)");
  }
  camera = await navigator.mediaDevices.getUserMedia({ video: true });
  const video = $("camera");
  video.srcObject = camera;
  video.hidden = false;
  $("camera-snap").disabled = false;
  $("camera-start").textContent = "Stop webcam";
}

function stopCamera() {
  for (const track of camera.getTracks()) track.stop();
  camera = null;
  $("camera").hidden = true;
  $("camera-snap").disabled = true;
  $("camera-start").textContent = "Start webcam";
}

async function snap() {
  const video = $("camera");
  if (!video.videoWidth) throw new Error("the webcam has not shown a picture yet: try again in a moment");
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  await classify(new File([blob], "snapshot.jpg", { type: "image/jpeg" }));
}

// ------------------------------------------------------------------ start
function start() {
  const stored = sessionStorage.getItem("fewshot-api-key");
  if (stored) $("api-key").value = stored;
  $("api-key").addEventListener("change", () => {
    sessionStorage.setItem("fewshot-api-key", apiKey());
    guarded("task", () => refreshTasks());
  });
  $("refresh-tasks").addEventListener("click", () => guarded("task", () => refreshTasks()));
  $("task-select").addEventListener("change", () => guarded("task", showTask));
  $("download-onnx").addEventListener("click", () => guarded("task", downloadOnnx));
  $("delete-task").addEventListener("click", () => guarded("task", deleteTask));
  $("add-box").addEventListener("click", () => addBox().querySelector(".class-name").focus());
  $("create-task").addEventListener("click", () => guarded("teach", createTask));
  $("add-to-task").addEventListener("click", () => guarded("teach", addToTask));
  const query = $("query-files");
  query.addEventListener("change", () => {
    const file = query.files[0];
    query.value = "";
    if (file) guarded("classify", () => classify(file));
  });
  wireDrop($("query-drop"), (files) => guarded("classify", () => classify(files[0])));
  $("camera-start").addEventListener("click", () => guarded("classify", async () => (camera ? stopCamera() : startCamera())));
  $("camera-snap").addEventListener("click", () => guarded("classify", snap));
  addBox();
  addBox();
  guarded("task", async () => {
    const health = await (await api("/healthz")).json();
    show("model-line", `Model ${health.model} (${health.method}), fewshot-sdk ${health.version}.`);
    if (health.finetune === false) {
      // a server that does not say (an older one) leaves the box on: its refusal, if any, shows as an error
      $("finetune").checked = false;
      $("finetune").disabled = true;
      const why = `The model ${health.model} (${health.method}) cannot fine-tune: only the metric methods on a backbone can (ProtoNet, Matching, Relation, Siamese).`;
      show("finetune-off", why);
      $("finetune-off").hidden = false;
    }
    await refreshTasks();
  });
}

document.addEventListener("DOMContentLoaded", start);
