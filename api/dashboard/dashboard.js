// Relay's dashboard. Everything it shows comes from the API it is served by: GET /stats (queue, named queues
// and workers),
// GET /tasks (lists), GET /tasks/{id}, the task's events streamed with fetch (NDJSON), and the actions
// DELETE /tasks/{id}, POST /tasks/{id}/retry and POST /tasks; workflows (GET /workflows, their trees and
// streams) are drawn by workflows.js with the helpers this file hands it. With API keys configured, the first call that
// gets a 401 asks for a key once; it is kept in sessionStorage and sent as X-API-Key, never put in a URL
// (EventSource cannot send headers, so events are read with fetch streaming instead).
// Every value from the API is written with textContent: a task's data is never interpreted as HTML.
"use strict";

(() => {
  const BASE = location.pathname.replace(/\/dashboard\/.*$/, ""); // a path prefix in front of the API, if any
  const KEY_STORAGE = "relay.apiKey";
  const REFRESH_MS = 2000;
  const TASK_REFRESH_MS = 5000;
  const FINAL = new Set(["succeeded", "failed", "aborted"]);
  const RETRYABLE = new Set(["failed", "aborted"]);
  const FAILED_PAGES = 5; // GET /tasks examines a bounded part of the index per call: follow a few cursors

  const session = { key: sessionStorage.getItem(KEY_STORAGE), keyPrompt: null, current: null };
  // What the page has seen, for whoever drives it (the browser tests read it).
  const seen = (window.relayDashboard = { task: null, progress: [], errors: [] });

  // --- small helpers ------------------------------------------------------------------------------------

  const $ = (selector) => document.querySelector(selector);

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (className) node.className = className;
    return node;
  }

  function cell(row, content, className) {
    const td = element("td", null, className);
    if (content instanceof Node) td.appendChild(content);
    else if (content !== undefined && content !== null) td.textContent = String(content);
    row.appendChild(td);
    return td;
  }

  function badge(state) {
    return element("span", state, `state state-${state}`);
  }

  function taskLink(id, text) {
    const link = element("a", text || id);
    link.href = `#/tasks/${encodeURIComponent(id)}`;
    return link;
  }

  function shortId(id) {
    return id.length > 14 ? `${id.slice(0, 12)}…` : id;
  }

  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    const today = new Date().toDateString() === date.toDateString();
    return today ? date.toLocaleTimeString() : date.toLocaleString();
  }

  function pretty(value) {
    return JSON.stringify(value, null, 2);
  }

  function show(node, visible) {
    node.hidden = !visible;
  }

  function replaceRows(table, rows) {
    const body = table.querySelector("tbody");
    body.replaceChildren(...rows);
  }

  function connection(ok, problem) {
    const node = $("#connection");
    node.classList.toggle("down", !ok);
    node.textContent = ok ? `updated ${new Date().toLocaleTimeString()}` : `API unreachable: ${problem}`;
  }

  // --- the API, with the key ----------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      const error = body && body.error;
      super(error ? error.message : `HTTP ${status}`);
      this.status = status;
      this.code = error ? error.code : null;
    }
  }

  async function call(path, options = {}) {
    for (;;) {
      const headers = new Headers(options.headers || {});
      if (session.key) headers.set("X-API-Key", session.key);
      const response = await fetch(BASE + path, { ...options, headers, cache: "no-store" });
      if (response.status !== 401) return response;
      await askForKey(session.key ? "That key was refused; try another." : null);
    }
  }

  async function callJson(path, options) {
    const response = await call(path, options);
    const body = response.status === 204 ? null : await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, body);
    return body;
  }

  function askForKey(problem) {
    if (!session.keyPrompt) {
      session.keyPrompt = new Promise((resolve) => {
        const dialog = $("#key-dialog");
        const input = $("#key-input");
        const error = $("#key-error");
        error.textContent = problem || "";
        show(error, Boolean(problem));
        input.value = "";
        $("#key-form").onsubmit = (event) => {
          event.preventDefault();
          const key = input.value.trim();
          if (!key) return;
          session.key = key;
          sessionStorage.setItem(KEY_STORAGE, key);
          show($("#forget-key"), true);
          session.keyPrompt = null;
          dialog.close();
          resolve();
        };
        dialog.oncancel = (event) => event.preventDefault(); // nothing works without it: keep asking
        if (!dialog.open) dialog.showModal();
        input.focus();
      });
    }
    return session.keyPrompt;
  }

  $("#forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    session.key = null;
    location.reload();
  });
  show($("#forget-key"), Boolean(session.key));

  // --- views ---------------------------------------------------------------------------------------------

  function mount(templateId) {
    const view = $("#view");
    view.replaceChildren($(`#${templateId}`).content.cloneNode(true));
    return view;
  }

  function route() {
    if (session.current) session.current.stop();
    const match = location.hash.match(/^#\/tasks\/(.+)$/);
    const flow = location.hash.match(/^#\/workflows\/(.+)$/);
    if (flow) session.current = workflows.view(kit, decodeURIComponent(flow[1]));
    else session.current = match ? taskView(decodeURIComponent(match[1])) : overview();
  }

  // --- overview: queue, workers, submit, failed and recent tasks -----------------------------------------

  function overview() {
    mount("overview");
    let stopped = false;
    let timer = null;

    async function refresh() {
      try {
        await Promise.all([refreshStats(), refreshRecent(), refreshFailed(), workflows.refreshList(kit)]);
        connection(true);
      } catch (error) {
        connection(false, error.message);
      }
      if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
    }

    for (const id of ["#filter-state", "#filter-task", "#filter-limit"]) {
      $(id).addEventListener("change", () => refreshRecent().catch((error) => connection(false, error.message)));
    }
    $("#submit-form").addEventListener("submit", submit);
    loadTaskNames();
    refresh();
    return {
      stop() {
        stopped = true;
        clearTimeout(timer);
      },
    };
  }

  async function loadTaskNames() {
    let names = [];
    let spec = null;
    try {
      spec = await callJson("/openapi.json");
      names = spec.components.schemas.TaskSubmission.properties.task.enum || [];
    } catch (error) {
      seen.errors.push(`task names: ${error.message}`);
    }
    const submitTask = $("#submit-task");
    const filterTask = $("#filter-task");
    if (!submitTask || !filterTask) return; // the view changed meanwhile
    for (const name of names) {
      submitTask.appendChild(element("option", name));
      filterTask.appendChild(element("option", name));
    }
    if (names.includes("echo")) submitTask.value = "echo"; // the demo task that needs no arguments
    if (!spec) return;
    submitTask.addEventListener("change", () => describeTask(spec, submitTask.value));
    describeTask(spec, submitTask.value);
  }

  // --- the submit form: the chosen task's arguments, from the schema its workers publish -------------------

  function resolve(spec, node) {
    // A task's schema refers to its own nested models as components (#/components/schemas/<task>.<Model>).
    let seenRefs = 0;
    while (node && node.$ref && seenRefs++ < 10) {
      node = spec.components.schemas[node.$ref.replace("#/components/schemas/", "")];
    }
    return node || {};
  }

  function typeName(spec, property) {
    const node = resolve(spec, property);
    if (node.enum) return node.enum.map((v) => JSON.stringify(v)).join(" | ");
    if (node.anyOf) return node.anyOf.map((option) => typeName(spec, option)).join(" | ");
    if (node.type === "array" && node.items) return `array of ${typeName(spec, node.items)}`;
    return node.type || node.title || "any";
  }

  function emptyValue(spec, property) {
    // What a required argument starts as: a value of its type, for the user to change.
    const node = resolve(spec, property);
    if ("const" in node) return node.const;
    if (node.enum) return node.enum[0];
    if (node.anyOf) {
      const options = node.anyOf.map((option) => resolve(spec, option));
      return options.some((option) => option.type === "null") ? null : emptyValue(spec, options[0]);
    }
    const empty = { string: "", integer: 0, number: 0, boolean: false, array: [], object: {}, null: null };
    return node.type in empty ? empty[node.type] : null;
  }

  function allowed(spec, property) {
    const node = resolve(spec, property);
    const parts = [];
    const low = node.minimum ?? node.exclusiveMinimum;
    const high = node.maximum ?? node.exclusiveMaximum;
    if (low !== undefined) parts.push(`${"exclusiveMinimum" in node ? ">" : "≥"} ${low}`);
    if (high !== undefined) parts.push(`${"exclusiveMaximum" in node ? "<" : "≤"} ${high}`);
    if (node.minLength !== undefined) parts.push(`length ≥ ${node.minLength}`);
    if (node.maxLength !== undefined) parts.push(`length ≤ ${node.maxLength}`);
    if (node.pattern) parts.push(`matches ${node.pattern}`);
    return parts.join(", ");
  }

  function describeTask(spec, name) {
    // Prefill the arguments (defaults, and a value of its type for each required one) and show what the task takes.
    const textarea = $("#submit-kwargs");
    if (!textarea) return; // the view changed meanwhile
    const task = (spec["x-relay-tasks"] || {})[name];
    const schema = task ? resolve(spec, task.arguments) : {};
    const properties = schema.properties || {};
    const required = new Set(schema.required || []);
    const kwargs = {};
    const rows = [];
    for (const [key, property] of Object.entries(properties)) {
      const row = element("tr");
      cell(row, element("code", key));
      cell(row, typeName(spec, property));
      if ("default" in property) {
        kwargs[key] = property.default;
        cell(row, element("code", JSON.stringify(property.default)));
      } else if (required.has(key)) {
        kwargs[key] = emptyValue(spec, property);
        cell(row, "required", "required");
      } else {
        cell(row, "");
      }
      cell(row, allowed(spec, property));
      rows.push(row);
    }
    textarea.value = pretty(kwargs);
    $("#submit-description").textContent = task ? task.description || "" : "";
    replaceRows($("#submit-params"), rows);
    show($("#submit-params"), rows.length > 0);
    show($("#submit-no-params"), Boolean(task) && rows.length === 0);
    $("#submit-json-schema").textContent = task ? pretty(schema) : "";
  }

  async function refreshStats() {
    const stats = await callJson("/stats");
    if (!$("#workers")) return;
    $("#queue-due").textContent = stats.queue.due;
    $("#queue-deferred").textContent = stats.queue.deferred;
    $("#queue-running").textContent = stats.queue.running;
    $("#worker-count").textContent = stats.workers.filter((w) => w.status !== "silent").length;
    showQueues(stats.queues);
    const rows = stats.workers.map((worker) => {
      const row = element("tr");
      row.dataset.workerId = worker.id;
      const totals = worker.totals || {};
      cell(row, worker.hostname);
      cell(row, worker.pid);
      cell(row, badge(worker.status));
      cell(row, (worker.queues || []).join(", "), "queue-column mono"); // the named queues it serves, earlier first
      cell(row, `${worker.running} / ${worker.concurrency}`);
      cell(row, totals.succeeded || 0);
      cell(row, totals.failed || 0);
      cell(row, totals.retrying || 0);
      cell(row, totals.requeued || 0);
      cell(row, when(worker.started_at));
      cell(row, `${worker.seen_seconds_ago} s ago`);
      cell(row, worker.metrics_port || "off");
      return row;
    });
    replaceRows($("#workers"), rows);
    $("#workers").classList.toggle("without-queues", !stats.workers.some((w) => Array.isArray(w.queues)));
    show($("#no-workers"), rows.length === 0);
  }

  function showQueues(queues) {
    // Named queues with work or live workers; an API without named queues sends no list, and the section stays hidden.
    show($("#queues-section"), Array.isArray(queues));
    if (!Array.isArray(queues)) return;
    const rows = queues.map((queue) => {
      const row = element("tr");
      row.dataset.queue = queue.name;
      cell(row, queue.name, "mono");
      cell(row, queue.due);
      cell(row, queue.deferred);
      cell(row, queue.running);
      return row;
    });
    replaceRows($("#queues"), rows);
    show($("#no-queues"), rows.length === 0);
  }

  function hasQueue(task) {
    return task.queue !== undefined && task.queue !== null;
  }

  async function refreshRecent() {
    const params = new URLSearchParams({ limit: $("#filter-limit").value });
    if ($("#filter-state").value) params.set("state", $("#filter-state").value);
    if ($("#filter-task").value) params.set("task", $("#filter-task").value);
    const page = await callJson(`/tasks?${params}`);
    if (!$("#recent")) return;
    const rows = page.tasks.map((task) => {
      const row = element("tr");
      row.dataset.taskId = task.id;
      cell(row, task.task);
      cell(row, hasQueue(task) ? task.queue : "", "queue-column mono");
      cell(row, task.priority ?? "", "queue-column");
      cell(row, taskLink(task.id, shortId(task.id)), "mono");
      cell(row, badge(task.state));
      cell(row, task.tries);
      cell(row, when(task.enqueued_at));
      cell(row, when(task.started_at));
      cell(row, when(task.finished_at));
      cell(row, actionButtons(task));
      return row;
    });
    replaceRows($("#recent"), rows);
    $("#recent").classList.toggle("without-queues", !page.tasks.some(hasQueue));
    show($("#no-recent"), rows.length === 0);
  }

  async function refreshFailed() {
    const tasks = [];
    let cursor = null;
    for (let page = 0; page < FAILED_PAGES && tasks.length < 20; page++) {
      const params = new URLSearchParams({ state: "failed", limit: "20" });
      if (cursor) params.set("cursor", cursor);
      const answer = await callJson(`/tasks?${params}`);
      tasks.push(...answer.tasks);
      cursor = answer.next_cursor;
      if (!cursor) break;
    }
    if (!$("#failed")) return;
    const rows = tasks.slice(0, 20).map((task) => {
      const row = element("tr");
      row.dataset.taskId = task.id;
      const error = task.error || {};
      cell(row, task.task);
      cell(row, taskLink(task.id, shortId(task.id)), "mono");
      cell(row, `${error.error_type || "Error"}: ${error.message || ""}`, "data");
      cell(row, when(task.finished_at));
      cell(row, actionButtons(task));
      return row;
    });
    replaceRows($("#failed"), rows);
    show($("#no-failed"), rows.length === 0);
  }

  function actionButtons(task) {
    const box = element("span");
    if (!FINAL.has(task.state)) box.appendChild(actionButton("Cancel", "cancel", task.id));
    if (RETRYABLE.has(task.state)) box.appendChild(actionButton("Retry", "retry", task.id));
    return box;
  }

  function actionButton(label, action, id) {
    const button = element("button", label, "small");
    button.type = "button";
    button.dataset.action = action;
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await act(action, id);
        location.hash = `#/tasks/${encodeURIComponent(id)}`;
      } catch (error) {
        button.disabled = false;
        button.title = error.message;
        seen.errors.push(`${action} ${id}: ${error.message}`);
      }
    });
    return button;
  }

  function act(action, id) {
    const path = `/tasks/${encodeURIComponent(id)}`;
    return action === "cancel"
      ? callJson(path, { method: "DELETE" })
      : callJson(`${path}/retry`, { method: "POST" });
  }

  async function submit(event) {
    event.preventDefault();
    const error = $("#submit-error");
    show(error, false);
    try {
      const body = { task: $("#submit-task").value, kwargs: JSON.parse($("#submit-kwargs").value || "{}") };
      const delay = $("#submit-delay").value;
      if (delay) body.delay_seconds = Number(delay);
      const submitted = await callJson("/tasks", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      location.hash = `#/tasks/${encodeURIComponent(submitted.id)}`;
    } catch (problem) {
      error.textContent = problem instanceof SyntaxError ? `arguments: ${problem.message}` : problem.message;
      show(error, true);
    }
  }

  // --- one task, live ------------------------------------------------------------------------------------

  function taskView(id) {
    mount("task");
    const task = { id, lastSeq: 0, state: null, following: false, stopped: false, controller: null, timer: null };
    seen.task = { id, events: [] };
    seen.progress = [];
    $("#task-id").textContent = id;
    $("#task-cancel").addEventListener("click", () => taskAction(task, "cancel"));
    $("#task-retry").addEventListener("click", () => taskAction(task, "retry"));

    async function poll() {
      await loadTask(task);
      if (task.stopped) return;
      if (task.state && !FINAL.has(task.state)) follow(task); // e.g. retried from elsewhere
      task.timer = setTimeout(poll, TASK_REFRESH_MS);
    }
    poll();
    follow(task);
    return {
      stop() {
        task.stopped = true;
        clearTimeout(task.timer);
        if (task.controller) task.controller.abort();
      },
    };
  }

  async function loadTask(task) {
    let view;
    try {
      view = await callJson(`/tasks/${encodeURIComponent(task.id)}`);
      connection(true);
    } catch (error) {
      if (error.status === 404) {
        setState(task, "unknown");
        $("#task-name").textContent = "no such task";
        return;
      }
      connection(false, error.message);
      return;
    }
    if (task.stopped) return;
    $("#task-name").textContent = view.task;
    $("#task-tries").textContent = view.tries;
    $("#task-arguments").textContent = pretty(view.arguments);
    $("#task-queue").textContent = hasQueue(view) ? view.queue : "";
    show($("#task-queue-line"), hasQueue(view));
    $("#task-priority").textContent = view.priority ?? "";
    show($("#task-priority-line"), view.priority !== undefined && view.priority !== null);
    setState(task, view.state);
    if (view.state === "succeeded") showResult(view.result, false);
    else if (view.error && FINAL.has(view.state)) showError(view.error);
    const times = [
      ["waiting", view.waiting_reason],
      ["enqueued", view.enqueued_at],
      ["scheduled for", view.scheduled_for],
      ["started", view.started_at],
      ["finished", view.finished_at],
      ["next try", view.next_try_at],
      ["timeout", view.timeout_seconds ? `${view.timeout_seconds} s` : null],
    ];
    const list = $("#task-times");
    list.replaceChildren();
    for (const [label, value] of times) {
      if (!value) continue;
      list.appendChild(element("dt", label));
      list.appendChild(element("dd", label === "timeout" || label === "waiting" ? value : when(value)));
    }
  }

  function setState(task, state) {
    task.state = state;
    const node = $("#task-state");
    node.textContent = state;
    node.className = `state state-${state}`;
    show($("#task-cancel"), !FINAL.has(state) && state !== "unknown");
    show($("#task-retry"), RETRYABLE.has(state));
  }

  async function taskAction(task, action) {
    const error = $("#task-action-error");
    show(error, false);
    try {
      const answer = await act(action, task.id);
      setState(task, answer.state);
      await loadTask(task);
      if (action === "retry") follow(task);
    } catch (problem) {
      error.textContent = problem.message;
      show(error, true);
    }
  }

  // Follows the task's events until its last `end`: resumes after the last seq on a dropped connection, and
  // after a `reconnect` frame (its API process is shutting down) once its retry_ms have passed.
  async function follow(task) {
    if (task.following || task.stopped) return;
    task.following = true;
    let pause = 500;
    try {
      while (!task.stopped) {
        const outcome = await readStream(task);
        if (outcome.done) return;
        streamStatus(outcome.why);
        await new Promise((resolve) => setTimeout(resolve, outcome.retryMs ?? pause));
        pause = Math.min(pause * 2, 5000);
      }
    } finally {
      task.following = false;
    }
  }

  // Reads one NDJSON stream (a task's or a workflow's), calling onLine(frame) per event and onOpen() once it is
  // live; says how it ended: its status, its last event and the reconnect hint, if any.
  async function streamLines(path, signal, onLine, onOpen) {
    const response = await call(path, { headers: { Accept: "application/x-ndjson" }, signal });
    if (response.status === 204) return { status: 204, last: null, retryMs: null };
    if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null));
    if (onOpen) onOpen();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = "";
    let retryMs = null;
    let last = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += value;
      let newline;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline).trim();
        buffered = buffered.slice(newline + 1);
        if (!line) continue;
        const frame = JSON.parse(line);
        if (frame.type === "heartbeat") continue;
        if (frame.type === "reconnect") {
          retryMs = frame.data.retry_ms;
          continue;
        }
        onLine(frame);
        last = frame;
      }
    }
    return { status: response.status, last, retryMs };
  }

  async function readStream(task) {
    task.controller = new AbortController();
    let ended;
    try {
      const path = `/tasks/${encodeURIComponent(task.id)}/events?after=${task.lastSeq}`;
      ended = await streamLines(path, task.controller.signal, (frame) => onEvent(task, frame), () => streamStatus("(live)"));
    } catch (error) {
      if (task.stopped) return { done: true };
      if (error.status === 404) return { done: true };
      return { done: false, why: `(reconnecting: ${error.message})` };
    }
    if (ended.status === 204 || (ended.last && ended.last.type === "end" && ended.retryMs === null)) {
      streamStatus("(ended)");
      return { done: true };
    }
    return { done: false, why: "(reconnecting)", retryMs: ended.retryMs };
  }

  function streamStatus(text) {
    const node = $("#task-stream");
    if (node) node.textContent = text;
  }

  function onEvent(task, event) {
    if (task.stopped || (event.seq && event.seq <= task.lastSeq)) return;
    task.lastSeq = event.seq || task.lastSeq;
    seen.task.events.push(event);
    addEventRow(event);
    if (event.trace_id) {
      $("#task-trace").textContent = event.trace_id;
      show($("#task-trace-line"), true);
    }
    const data = event.data || {};
    switch (event.type) {
      case "started":
        setState(task, "running");
        $("#task-tries").textContent = data.try;
        showProgress(null);
        break;
      case "progress":
        showProgress(data);
        break;
      case "partial":
        $("#task-partials").appendChild(element("li", JSON.stringify(event.data)));
        show($("#task-no-partials"), false);
        break;
      case "result":
        showResult(event.data, true);
        break;
      case "error":
        showError(data);
        break;
      case "aborted":
        showError({ error_type: "Aborted", message: data.reason || "aborted" });
        break;
      case "retrying":
        setState(task, "retrying");
        break;
      case "requeued":
        setState(task, "queued");
        break;
      case "end":
        setState(task, data.state);
        loadTask(task);
        break;
      default:
        break;
    }
  }

  function addEventRow(event) {
    const row = element("tr");
    row.dataset.type = event.type;
    cell(row, event.seq);
    cell(row, event.type);
    cell(row, event.ts ? new Date(event.ts * 1000).toLocaleTimeString() : "");
    cell(row, JSON.stringify(event.data), "data mono");
    $("#task-events tbody").appendChild(row);
  }

  function showProgress(data) {
    const bar = $("#task-progress");
    const text = $("#task-progress-text");
    if (!data) {
      bar.value = 0;
      text.textContent = "started; no progress reported yet";
      $("#task-progress-message").textContent = "";
      return;
    }
    const { current, total, message } = data;
    if (total) {
      bar.max = total;
      bar.value = current;
      text.textContent = `${current} / ${total} (${Math.round((current / total) * 100)} %)`;
    } else {
      bar.removeAttribute("value"); // indeterminate: no total to measure against
      text.textContent = `${current}`;
    }
    $("#task-progress-message").textContent = message || "";
    seen.progress.push({ current, total });
  }

  function showResult(value, live) {
    const box = $("#task-result");
    box.className = "json";
    box.textContent = pretty(value);
    if (live) seen.task.result = value;
  }

  function showError(error) {
    const box = $("#task-result");
    box.className = "json error-box";
    box.textContent = `${error.error_type || "Error"}: ${error.message || ""}`;
  }

  // What workflows.js (loaded first: window.relayWorkflows) draws with.
  const kit = { $, element, cell, badge, taskLink, shortId, when, pretty, show, replaceRows, connection, call, callJson };
  Object.assign(kit, { seen, mount, streamLines, FINAL, RETRYABLE, ApiError });
  const workflows = window.relayWorkflows;

  window.addEventListener("hashchange", route);
  route();
})();
