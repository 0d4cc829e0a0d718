// The console's Workers page (#/workers): the live job workers from
// GET {root}/workers, read again every few seconds, with drain, undrain and
// retire buttons (POST {root}/workers/<id>/<action>). Every text from the
// server is set with textContent (h() in form.js).

import { h } from "./form.js";

/** How often the list is read again while it is shown. */
const REFRESH_MS = 2000;

/** Seconds from a naive UTC ISO time to now, or null when it does not read. */
function secondsSince(iso) {
  const when = Date.parse(`${iso}Z`);
  return Number.isNaN(when) ? null : Math.max(0, Math.round((Date.now() - when) / 1000));
}

function mebibytes(bytes) {
  return `${Math.round((Number(bytes) || 0) / 2 ** 20)} MiB`;
}

/**
 * Show the workers page, given what it needs of console.js: `call`,
 * `problem`, `show` and `rootPath`. Returns the view, whose `stop()` ends
 * its refreshing when another view is shown.
 */
export function showWorkers({ call, problem, show, rootPath }) {
  const note = h("p", { class: "list-note", role: "status" });
  const refresh = h("button", { type: "button", class: "secondary", text: "Refresh" });
  const tbody = h("tbody");
  const headings = ["Worker", "State", "Job", "Memory", "Last seen", "Done / failed"];
  const table = h(
    "table",
    { class: "jobs workers" },
    h("caption", { class: "vh", text: "Live job workers, by host" }),
    h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col", text: t })),
      h("th", { scope: "col" }, h("span", { class: "vh", text: "Actions" })))),
    tbody,
  );
  show(
    "Workers",
    h("p", { class: "lead", text: "Each job worker process, as its last heartbeat recorded it. A drained worker finishes its job and takes no other; a retired one finishes its job and exits." }),
    h("div", { class: "toolbar" }, refresh),
    note,
    h("div", { class: "table-scroll" }, table),
  );

  let stopped = false;
  let timer = null;
  let lastText = "";

  function button(worker, action, label, danger) {
    return h("button", {
      type: "button",
      class: `${danger ? "danger" : "secondary"} small`,
      "data-worker": worker.id,
      "data-role": action,
      "aria-label": `${label} ${worker.id}`,
      text: label,
      onclick: (event) => act(worker, action, event.currentTarget),
    });
  }

  function row(worker) {
    const seen = secondsSince(worker.lastSeen);
    const job = worker.job
      ? h("td", {}, h("a", { href: `#/job/${worker.job}`, text: worker.jobType || worker.job }), " ", h("code", { class: "short", text: String(worker.job).slice(0, 8) }))
      : h("td", { class: "none", text: "—" });
    const actions = h("td", { class: "actions-cell" });
    if (worker.state === "idle" || worker.state === "running") actions.append(button(worker, "drain", "Drain", false));
    if (worker.state === "draining") actions.append(button(worker, "undrain", "Undrain", false));
    if (worker.state !== "retiring") actions.append(button(worker, "retire", "Retire", true));
    return h(
      "tr",
      { "data-worker": worker.id, "data-state": worker.state },
      h("td", {}, h("code", { text: worker.id }), h("span", { class: "sub-line", text: `${worker.host} · pid ${worker.pid} · ${worker.queue}` })),
      h("td", {}, h("span", { class: `badge state-${worker.state}`, text: worker.state })),
      job,
      h("td", { text: mebibytes(worker.rss) }),
      h("td", {}, h("time", { datetime: `${worker.lastSeen}Z`, title: `${worker.lastSeen} UTC`, text: seen === null ? String(worker.lastSeen) : `${seen} s ago` })),
      h("td", { class: "counts", text: `${worker.jobsDone} / ${worker.jobsFailed}` }),
      actions,
    );
  }

  async function act(worker, action, element) {
    element.disabled = true;
    try {
      const answer = await call(`${rootPath}/workers/${encodeURIComponent(worker.id)}/${action}`, { method: "POST" });
      note.textContent = answer.status === 202
        ? `Worker ${worker.id}: ${answer.data.state}; it acts on it at its next heartbeat.`
        : `Worker ${worker.id}: ${problem(answer)}.`;
    } catch (error) {
      note.textContent = `The server could not be reached: ${error.message}`;
    }
    load();
  }

  async function load() {
    clearTimeout(timer);
    try {
      const answer = await call(`${rootPath}/workers`);
      if (stopped) return;
      if (answer.status !== 200) {
        note.textContent = `The workers could not be listed: ${problem(answer)}`;
      } else {
        const workers = answer.data.workers;
        const text = JSON.stringify(workers);
        if (text !== lastText) {
          lastText = text;
          const focused = document.activeElement;
          const key = focused && tbody.contains(focused) ? [focused.dataset.worker, focused.dataset.role] : null;
          tbody.replaceChildren(...workers.map(row));
          if (!workers.length) tbody.replaceChildren(h("tr", {}, h("td", { colspan: String(headings.length + 1), class: "none", text: "No live workers." })));
          if (key) tbody.querySelector(`[data-worker="${CSS.escape(key[0] || "")}"][data-role="${key[1]}"]`)?.focus();
        } else {
          // the ages go on even when nothing else changed
          for (const time of tbody.querySelectorAll("time")) {
            const seen = secondsSince(time.getAttribute("datetime").slice(0, -1));
            if (seen !== null) time.textContent = `${seen} s ago`;
          }
        }
        document.getElementById("main").dataset.workersLoaded = "true";
      }
    } catch (error) {
      note.textContent = `The server could not be reached: ${error.message}`;
    }
    if (!stopped) timer = setTimeout(load, document.hidden ? 4 * REFRESH_MS : REFRESH_MS);
  }

  refresh.addEventListener("click", () => {
    lastText = "";
    load();
  });
  load();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      delete document.getElementById("main").dataset.workersLoaded;
    },
  };
}
