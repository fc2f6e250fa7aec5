// Relay's dashboard, workflows (docs/workflows.md): the overview's list of recent workflows (GET /workflows) and
// one workflow's tree, live (#/workflows/<id>): GET /workflows/{id} draws it (a chain left to right, a group top
// to bottom, a chord's callback after its group), and its one stream (GET /workflows/{id}/events, NDJSON) moves
// each step's box along (step_started, its own started, step_ended) until workflow_end. Loaded before
// dashboard.js, which calls these with its helpers (`kit`). Every value from the API is written as text.
"use strict";

window.relayWorkflows = (() => {
  const REFRESH_MS = 5000;
  const STEP_STATES = { step_started: "queued", step_ended: null };
  // A page examines a bounded part of the index, so a tenant among busier ones may get short pages: follow a few.
  const LIST_PAGES = 5;

  async function refreshList(kit) {
    const flows = [];
    let cursor = null;
    for (let page = 0; page < LIST_PAGES && flows.length < 20; page++) {
      const params = new URLSearchParams({ limit: String(20 - flows.length) });
      if (cursor) params.set("cursor", cursor);
      const answer = await kit.callJson(`/workflows?${params}`);
      flows.push(...answer.workflows);
      cursor = answer.next_cursor;
      if (!cursor) break;
    }
    const table = kit.$("#workflows");
    if (!table) return;
    const rows = flows.map((flow) => {
      const row = kit.element("tr");
      row.dataset.workflowId = flow.id;
      kit.cell(row, link(kit, flow.id, kit.shortId(flow.id)), "mono");
      kit.cell(row, kit.badge(flow.state));
      kit.cell(row, flow.steps);
      return row;
    });
    kit.replaceRows(table, rows);
    kit.show(kit.$("#no-workflows"), rows.length === 0);
  }

  function link(kit, id, text) {
    const anchor = kit.element("a", text || id);
    anchor.href = `#/workflows/${encodeURIComponent(id)}`;
    return anchor;
  }

  // --- one workflow, live -------------------------------------------------------------------------------

  function view(kit, id) {
    kit.mount("workflow");
    const flow = { id, lastSeq: 0, state: null, stopped: false, following: false, controller: null, timer: null };
    kit.seen.workflow = { id, events: [], steps: {} };
    kit.$("#workflow-id").textContent = id;
    kit.$("#workflow-cancel").addEventListener("click", () => action(kit, flow, "cancel"));
    kit.$("#workflow-retry").addEventListener("click", () => action(kit, flow, "retry"));

    async function poll() {
      await load(kit, flow);
      if (flow.stopped) return;
      if (flow.state === "running") follow(kit, flow);
      flow.timer = setTimeout(poll, REFRESH_MS);
    }
    poll().then(() => follow(kit, flow));
    return {
      stop() {
        flow.stopped = true;
        clearTimeout(flow.timer);
        if (flow.controller) flow.controller.abort();
      },
    };
  }

  async function load(kit, flow) {
    let answer;
    try {
      answer = await kit.callJson(`/workflows/${encodeURIComponent(flow.id)}`);
      kit.connection(true);
    } catch (error) {
      if (error.status === 404) {
        setState(kit, flow, "unknown");
        kit.$("#workflow-tree").textContent = "no such workflow (never submitted, or it expired)";
        return;
      }
      kit.connection(false, error.message);
      return;
    }
    if (flow.stopped) return;
    setState(kit, flow, answer.state);
    kit.$("#workflow-counts").textContent = Object.entries(answer.counts)
      .map(([state, count]) => `${count} ${state}`)
      .join(" · ");
    kit.$("#workflow-tree").replaceChildren(draw(kit, answer.tree));
    const result = kit.$("#workflow-result");
    if (answer.state === "succeeded") {
      result.className = "json";
      result.textContent = kit.pretty(answer.result);
    } else if (answer.error) {
      result.className = "json error-box";
      const where = answer.error.step !== undefined && answer.error.step !== null ? `step ${answer.error.step}: ` : "";
      result.textContent = `${where}${answer.error.error_type || "Error"}: ${answer.error.message || ""}`;
    }
    const times = kit.$("#workflow-times");
    times.replaceChildren();
    for (const [label, value] of [["created", answer.created_at], ["finished", answer.finished_at]]) {
      if (!value) continue;
      times.appendChild(kit.element("dt", label));
      times.appendChild(kit.element("dd", kit.when(value)));
    }
  }

  // A node of the tree: a step's box, or a chain (a row), group or map (a column), chord (its group, then its
  // callback). A map over the value before it is a step of its own (its number and state on its label), whose
  // members appear once it expanded (its step_started names them: the tree is read again).
  function draw(kit, node) {
    if (node.kind === "task") return stepBox(kit, node);
    if (node.kind === "chain") return row(kit, node.children.map((child) => draw(kit, child)));
    const group = kit.element("div", null, "wf-group");
    const label = kit.element("span", node.kind === "map" ? `map ${node.task}` : "group", "wf-label");
    group.appendChild(label);
    if (node.kind === "map" && node.state) {
      group.dataset.step = node.step;
      group.dataset.state = node.state;
      label.textContent = `${node.step}. map ${node.task} `;
      group.appendChild(kit.badge(node.state));
      kit.seen.workflow.steps[node.step] = node.state;
    }
    for (const child of node.children) group.appendChild(draw(kit, child));
    if (node.kind !== "chord") return group;
    group.firstChild.textContent = "chord";
    return row(kit, [group, draw(kit, node.callback)]);
  }

  function row(kit, parts) {
    const chain = kit.element("div", null, "wf-chain");
    parts.forEach((part, index) => {
      if (index > 0) chain.appendChild(kit.element("span", "→", "wf-arrow"));
      chain.appendChild(part);
    });
    return chain;
  }

  function stepBox(kit, node) {
    const box = kit.element("div", null, "wf-step");
    box.dataset.step = node.step;
    box.dataset.state = node.state;
    const head = kit.element("span", null, "wf-name");
    head.appendChild(kit.element("span", `${node.step}. `));
    head.appendChild(kit.taskLink(node.task_id, node.task));
    box.appendChild(head);
    box.appendChild(kit.badge(node.state));
    kit.seen.workflow.steps[node.step] = node.state;
    return box;
  }

  function markStep(kit, step, state) {
    const box = kit.$(`#workflow-tree [data-step="${Number(step)}"]`);
    kit.seen.workflow.steps[step] = state;
    if (!box) return;
    box.dataset.state = state;
    box.replaceChild(kit.badge(state), box.querySelector(":scope > .state"));
  }

  function setState(kit, flow, state) {
    flow.state = state;
    const node = kit.$("#workflow-state");
    node.textContent = state;
    node.className = `state state-${state}`;
    kit.show(kit.$("#workflow-cancel"), state === "running");
    kit.show(kit.$("#workflow-retry"), kit.RETRYABLE.has(state));
  }

  async function action(kit, flow, what) {
    const error = kit.$("#workflow-action-error");
    kit.show(error, false);
    const path = `/workflows/${encodeURIComponent(flow.id)}`;
    try {
      if (what === "cancel") await kit.callJson(path, { method: "DELETE" });
      else await kit.callJson(`${path}/retry`, { method: "POST" });
      await load(kit, flow);
      follow(kit, flow);
    } catch (problem) {
      error.textContent = problem.message;
      kit.show(error, true);
    }
  }

  // Follows the workflow's stream until a workflow_end that is the last event; resumes after its last seq.
  async function follow(kit, flow) {
    if (flow.following || flow.stopped) return;
    flow.following = true;
    let pause = 500;
    try {
      while (!flow.stopped) {
        flow.controller = new AbortController();
        let ended;
        try {
          const path = `/workflows/${encodeURIComponent(flow.id)}/events?after=${flow.lastSeq}`;
          ended = await kit.streamLines(path, flow.controller.signal, (event) => onEvent(kit, flow, event), () =>
            status(kit, "(live)"),
          );
        } catch (error) {
          if (flow.stopped || error.status === 404) return;
          status(kit, `(reconnecting: ${error.message})`);
          await new Promise((resolve) => setTimeout(resolve, pause));
          pause = Math.min(pause * 2, 5000);
          continue;
        }
        if (ended.status === 204 || (ended.last && ended.last.type === "workflow_end" && ended.retryMs === null)) {
          status(kit, "(ended)");
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, ended.retryMs ?? pause));
      }
    } finally {
      flow.following = false;
    }
  }

  function status(kit, text) {
    const node = kit.$("#workflow-stream");
    if (node) node.textContent = text;
  }

  function onEvent(kit, flow, event) {
    if (flow.stopped || (event.seq && event.seq <= flow.lastSeq)) return;
    flow.lastSeq = event.seq || flow.lastSeq;
    kit.seen.workflow.events.push(event);
    addRow(kit, event);
    const own = event.task_id === `${flow.id}:${event.step}`; // a step's own events, not its children's
    if (event.type === "step_started" && event.data.members) load(kit, flow); // a map expanded: draw its members
    else if (event.type in STEP_STATES) markStep(kit, event.step, STEP_STATES[event.type] || event.data.state);
    else if (event.type === "started" && own) markStep(kit, event.step, "running");
    else if (event.type === "workflow_end") load(kit, flow);
  }

  function addRow(kit, event) {
    const line = kit.element("tr");
    line.dataset.type = event.type;
    kit.cell(line, event.seq);
    kit.cell(line, event.step ?? "");
    kit.cell(line, event.type);
    kit.cell(line, event.task_id ? kit.taskLink(event.task_id, kit.shortId(event.task_id)) : "", "mono");
    kit.cell(line, event.ts ? new Date(event.ts * 1000).toLocaleTimeString() : "");
    kit.cell(line, JSON.stringify(event.data), "data mono");
    const body = kit.$("#workflow-events tbody");
    if (body) body.appendChild(line);
  }

  return { refreshList, view };
})();
