// The console's Queues page (#/queues): each queue's entries by state, the
// wait of its oldest ready entry and whether it is paused, read again from
// GET {root}/queues every few seconds; Pause and Resume for the service's
// own queue. Rows are updated in place, so a button keeps its focus.

import { h } from "./form.js";

/** How often the queues are read again while the page is shown. */
const QUEUES_MS = 2000;

/** A wait in seconds as people read it: "42 s", "3 min 5 s", "2 h 10 min". */
export function waitText(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  const s = Math.max(0, Math.floor(Number(seconds) || 0));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d ${Math.floor((s % 86400) / 3600)} h`;
}

/**
 * Show the Queues page in `main` through the console's own helpers.
 * @param {{call: Function, show: Function, problem: Function, root: string, own: string}} console
 *   `root` is the tree's root path, `own` the service's queue (the only one
 *   its API pauses).
 */
export function showQueues({ call, show, problem, root, own }) {
  const main = document.getElementById("main");
  const note = h("p", { class: "list-note", role: "status" });
  const tbody = h("tbody");
  const headings = ["Queue", "Ready", "Delayed", "Reserved", "Oldest wait", "State"];
  const table = h(
    "table",
    { class: "jobs queues" },
    h("caption", { class: "vh", text: "Queues: entries by state" }),
    h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col", text: t })), h("th", { scope: "col" }, h("span", { class: "vh", text: "Actions" })))),
    tbody,
  );
  show(
    "Queues",
    h("p", { class: "lead", text: "Ready entries wait for a free worker; delayed ones for their start time; reserved ones run. A paused queue keeps taking jobs, and this project's workers start none of them until it is resumed." }),
    note,
    table,
  );

  /** name -> the row's nodes, updated in place */
  const rows = new Map();
  let stopped = false;
  let timer = null;

  function makeRow(name) {
    const cells = {
      ready: h("td", { class: "num" }),
      delayed: h("td", { class: "num" }),
      reserved: h("td", { class: "num" }),
      wait: h("td", { class: "num" }),
      state: h("span", { class: "badge" }),
    };
    const actions = h("td");
    let button = null;
    if (name === own) {
      button = h("button", { type: "button", class: "small", "data-role": "toggle", onclick: () => toggle(name, button) });
      actions.append(button);
    }
    const tr = h("tr", { "data-queue": name }, h("td", {}, h("code", { text: name })), cells.ready, cells.delayed, cells.reserved, cells.wait, h("td", {}, cells.state), actions);
    return { tr, cells, button };
  }

  function update(row, queue) {
    row.cells.ready.textContent = String(queue.ready);
    row.cells.delayed.textContent = String(queue.delayed);
    row.cells.reserved.textContent = String(queue.reserved);
    row.cells.wait.textContent = waitText(queue.oldestReadyAge);
    const state = queue.paused ? "paused" : "active";
    row.cells.state.textContent = state;
    row.cells.state.className = `badge queue-${state}`;
    row.tr.dataset.paused = String(queue.paused);
    if (row.button && !row.button.dataset.busy) {
      const verb = queue.paused ? "Resume" : "Pause";
      row.button.textContent = verb;
      row.button.className = queue.paused ? "small" : "small secondary";
      row.button.setAttribute("aria-label", `${verb} queue ${queue.name}`);
      row.button.dataset.action = queue.paused ? "resume" : "pause";
    }
  }

  async function toggle(name, button) {
    const action = button.dataset.action;
    button.disabled = true;
    button.dataset.busy = "true";
    try {
      const answer = await call(`${root}/queues/${encodeURIComponent(name)}/${action}`, { method: "POST" });
      note.textContent =
        answer.status === 202
          ? `Queue ${name}: ${answer.data.paused ? "paused; from their next heartbeat, workers start none of its jobs" : "resumed"}.`
          : `Queue ${name} was not ${action}d: ${problem(answer)}`;
    } catch (error) {
      note.textContent = `The server could not be reached: ${error.message}`;
    }
    button.disabled = false;
    delete button.dataset.busy;
    load();
  }

  async function load() {
    clearTimeout(timer);
    try {
      const answer = await call(`${root}/queues`);
      if (stopped) return;
      if (answer.status !== 200) {
        note.textContent = `The queues could not be read: ${problem(answer)}`;
      } else {
        const seen = new Set();
        answer.data.queues.forEach((queue, index) => {
          seen.add(queue.name);
          let row = rows.get(queue.name);
          if (!row) {
            row = makeRow(queue.name);
            rows.set(queue.name, row);
          }
          update(row, queue);
          if (tbody.children[index] !== row.tr) tbody.insertBefore(row.tr, tbody.children[index] || null);
        });
        for (const [name, row] of rows) {
          if (!seen.has(name)) {
            row.tr.remove();
            rows.delete(name);
          }
        }
        main.dataset.queuesLoaded = String(Number(main.dataset.queuesLoaded || 0) + 1);
      }
    } catch (error) {
      if (stopped) return;
      note.textContent = `The server could not be reached: ${error.message}`;
    }
    if (!stopped) timer = setTimeout(load, document.hidden ? 4 * QUEUES_MS : QUEUES_MS);
  }

  load();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      delete main.dataset.queuesLoaded;
    },
  };
}
