// The flask-spacewalk console: the job tree, a form per job, live jobs and
// the recent-jobs list and the queues, all from the tree's own REST API.
// Views are chosen by the URL's hash (#/, #/leaf/<path>, #/job/<uuid>,
// #/queues), so the browser's
// back button and links work. Every text from the server is set with
// textContent (see h() in form.js): job messages are data, never markup.

import { buildForm, h } from "./form.js";
import { showQueues } from "./queues.js";

const page = document.body.dataset;
const SCRIPT_ROOT = page.scriptRoot || "";
const ROOT_PATH = (page.root || "").slice(SCRIPT_ROOT.length);
/** Whether the tree serves dump/<uuid>, the one answer that holds `running`. */
const HAS_DUMP = page.dump === "true";
/** How often a running job's progress is asked for (with If-None-Match). */
const POLL_MS = 300;
/** ... and when the tab is hidden or the server did not answer. */
const SLOW_POLL_MS = 2000;
/** How often the recent-jobs list is read again while it is shown. */
const LIST_MS = 2000;
const LIST_LIMIT = 20;
/** The API's statuses (runtime/status.py), the only words the console shows. */
const STATUSES = (page.statuses || "").split(" ").filter(Boolean);

const main = document.getElementById("main");
const treeNav = document.getElementById("tree");
const leavesByPath = new Map();
const leavesByType = new Map();
/** uuid -> leaf, for the jobs this page started or listed. */
const jobLeaves = new Map();
let current = null;
let firstView = true;
let listStatus = "";

const url = (path) => SCRIPT_ROOT + path;

async function call(path, { method = "GET", json, etag } = {}) {
  const headers = { Accept: "application/json" };
  if (etag) headers["If-None-Match"] = etag;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const response = await fetch(url(path), { method, headers, body, credentials: "same-origin", cache: "no-store" });
  let data = null;
  if (response.status !== 304) {
    const text = await response.text();
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
  }
  return { status: response.status, data, etag: response.headers.get("ETag") };
}

function problem(answer) {
  const message = answer.data && typeof answer.data.message === "string" ? answer.data.message : "";
  return `${answer.status}${message ? `: ${message}` : ""}`;
}

function percent(completeness) {
  return `${Math.floor(Math.max(0, Math.min(1, Number(completeness) || 0)) * 100)}%`;
}

/**
 * A job's status, in the API's words, from what progress and dump answer
 * (the listing's rule, docs/api.rst "Statuses"): queued and running both
 * have result -1 and differ by the stored `running`, which progress does
 * not answer. Null when the answers do not tell: `running` is null when it
 * is unknown (no dump route). Never a word of its own.
 */
function jobStatus(result, running) {
  let status = null;
  if (result === -1) status = running === null ? null : running ? "running" : "queued";
  else if (result === 410) status = "cancelled";
  else status = result >= 0 && result < 400 ? "finished" : "failed";
  return STATUSES.includes(status) ? status : null;
}

// -- the tree ----------------------------------------------------------------

async function loadBranch(path, name, description) {
  const [branches, leaves] = await Promise.all([call(`${path}/branches`), call(`${path}/leaves`)]);
  for (const answer of [branches, leaves]) {
    if (answer.status !== 200) throw new Error(problem(answer));
  }
  for (const leaf of leaves.data) {
    leavesByPath.set(leaf.path, leaf);
    leavesByType.set(leaf.jobType, leaf);
  }
  const children = await Promise.all(branches.data.map((b) => loadBranch(b.path, b.name, b.description)));
  return { path, name, description, leaves: leaves.data, branches: children };
}

function renderBranch(branch) {
  const items = branch.leaves.map((leaf) =>
    h(
      "li",
      { class: "leaf" },
      h("a", { href: `#/leaf${leaf.path}`, "data-path": leaf.path, text: leaf.name }),
      leaf.description ? h("p", { class: "desc", text: leaf.description }) : null,
    ),
  );
  for (const sub of branch.branches) {
    items.push(
      h(
        "li",
        { class: "branch" },
        h("span", { class: "branch-name", text: sub.name }),
        sub.description ? h("p", { class: "desc", text: sub.description }) : null,
        renderBranch(sub),
      ),
    );
  }
  return h("ul", {}, items);
}

/** decodeURI, or null for text that is not a valid percent-encoding. */
function decoded(text) {
  try {
    return decodeURI(text);
  } catch {
    return null; // URIError: a hand-edited or truncated link
  }
}

function markCurrent() {
  const hash = decoded(location.hash);
  for (const link of treeNav.querySelectorAll("a[data-path]")) {
    if (hash === `#/leaf${link.dataset.path}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

// -- views -------------------------------------------------------------------

function show(title, ...content) {
  const heading = h("h2", { tabindex: "-1", text: title });
  main.replaceChildren(heading, ...content.flat().filter(Boolean));
  document.title = `${title} · ${page.title} console`;
  if (!firstView) heading.focus();
  firstView = false;
  return heading;
}

function showInvalidLink(hash) {
  show(
    "Not a valid link",
    h("p", { text: `The address ends in ${hash}, which is not a link this console makes.` }),
    h("p", {}, "Pick a job from the tree, or see the ", h("a", { href: "#/", text: "recent jobs" }), "."),
  );
  return null;
}

function showLeaf(path) {
  const leaf = leavesByPath.get(path);
  if (!leaf) {
    show("No such job", h("p", { text: `There is no job at ${path} in this tree.` }));
    return null;
  }
  const summary = h("div", { class: "summary", role: "alert", tabindex: "-1", hidden: true });
  const status = h("p", { class: "form-status", role: "status" });
  const submit = h("button", { type: "submit", text: "Start job" });
  const form = h("form", { novalidate: true, "aria-label": `${leaf.name} parameters` });
  show(
    leaf.name,
    leaf.description ? h("p", { class: "lead", text: leaf.description }) : null,
    h("p", { class: "meta" }, "Job type ", h("code", { text: leaf.jobType }), " · ", h("code", { text: `POST ${leaf.path}/job` })),
    form,
  );
  let stopped = false;
  form.append(h("p", { text: "Loading the parameters…" }));
  call(`${leaf.path}/post-schema`).then(
    (answer) => {
      if (stopped) return;
      if (answer.status !== 200) {
        form.replaceChildren(h("p", { class: "error", text: `The parameters could not be read: ${problem(answer)}` }));
        return;
      }
      const fields = buildForm(answer.data.postSchema);
      const options = startOptions();
      form.replaceChildren(
        h("p", { class: "hint" }, "Fields marked ", h("span", { class: "req", text: "*" }), " are required; an empty field is left out, so the job's default applies."),
        summary,
        fields.element,
        options.element,
        h("div", { class: "actions" }, submit),
        status,
      );
      // the summary goes once every field it listed is right
      form.addEventListener("input", () => {
        if (!summary.hidden && fields.invalidFields().length === 0) summary.hidden = true;
      });
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        start(leaf, fields, { summary, status, submit, options });
      });
    },
    (error) => {
      if (!stopped) form.replaceChildren(h("p", { class: "error", text: `The server could not be reached: ${error.message}` }));
    },
  );
  return { stop: () => (stopped = true) };
}

function showSummary(fields, summary, rest, message) {
  const invalid = fields.invalidFields();
  const items = invalid.map((field) => h("li", { text: `${field.label || field.name}: ${(field.errors || []).join(" ")}` }));
  for (const [name, messages] of rest) items.push(h("li", { text: `${name}: ${[].concat(messages).join(" ")}` }));
  const count = items.length;
  summary.replaceChildren(
    h("p", { class: "summary-title", text: message || `The job was not started: ${count} field${count === 1 ? " needs" : "s need"} attention.` }),
    h("ul", {}, items),
  );
  summary.hidden = false;
  if (invalid.length) invalid[0].focus();
  else summary.focus();
}

/** The starting options of POST L/job under an "Options" fold: when the
 * job may start (the browser's local time, sent as UTC) and its priority. */
function startOptions() {
  const runAt = h("input", { type: "datetime-local", id: "option-run-at", name: "runAt", step: "1" });
  const priority = h("input", {
    type: "number", id: "option-priority", name: "priority", min: "0", max: "4294967295", step: "1",
    placeholder: "2147483648", inputmode: "numeric",
  });
  const element = h("details", { class: "options" },
    h("summary", { text: "Options" }),
    h("div", { class: "field" },
      h("label", { for: runAt.id, text: "Run at" }), runAt,
      h("p", { class: "hint", text: "Your local time; empty or past: as soon as a worker is free." })),
    h("div", { class: "field" },
      h("label", { for: priority.id, text: "Priority" }), priority,
      h("p", { class: "hint", text: "0 to 4294967295, lower runs first; empty: 2147483648." })),
  );
  return {
    element,
    /** The query string of the options given ("" when none). */
    query() {
      const query = new URLSearchParams();
      if (runAt.value) {
        const when = new Date(runAt.value);
        query.set("runAt", Number.isNaN(when.getTime()) ? runAt.value : when.toISOString());
      }
      // the typed text, not valueAsNumber: the server says what is wrong with it
      if (priority.value !== "" || priority.validity.badInput) query.set("priority", priority.value);
      const text = query.toString();
      return text ? `?${text}` : "";
    },
  };
}

async function start(leaf, fields, { summary, status, submit, options }) {
  summary.hidden = true;
  status.textContent = "";
  fields.clearErrors();
  if (!fields.validate()) {
    showSummary(fields, summary, []);
    return;
  }
  submit.disabled = true;
  status.textContent = "Starting the job…";
  try {
    const answer = await call(`${leaf.path}/job${options.query()}`, { method: "POST", json: fields.value() });
    if (answer.status === 201) {
      jobLeaves.set(answer.data.uuid, leaf);
      location.hash = `#/job/${answer.data.uuid}`;
      return;
    }
    status.textContent = "";
    if (answer.status === 422 && answer.data && answer.data.errors) {
      const rest = fields.showServerErrors(answer.data.errors);
      showSummary(fields, summary, rest, `The server did not start the job: ${answer.data.message}.`);
    } else {
      status.textContent = `The job was not started: ${problem(answer)}`;
    }
  } catch (error) {
    status.textContent = `The server could not be reached: ${error.message}`;
  } finally {
    submit.disabled = false;
  }
}

function logSection(kind, title) {
  const count = h("span", { class: "count", text: "0" });
  const list = h("ol", { class: `log log-${kind}` });
  const empty = h("p", { class: "none", text: "None yet." });
  const section = h("section", { class: `logs ${kind}`, "aria-label": title }, h("h3", {}, `${title} `, count), empty, list);
  let shown = 0;
  return {
    section,
    update(records) {
      if (!Array.isArray(records)) return;
      if (records.length < shown) {
        list.replaceChildren();
        shown = 0;
      }
      const atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
      for (const record of records.slice(shown)) {
        list.append(
          h(
            "li",
            {},
            h("time", { text: String(record.timeStamp ?? "") }),
            record.errorCode !== undefined ? h("span", { class: "code", text: String(record.errorCode) }) : null,
            // a block that keeps line breaks: tracebacks have many
            h("pre", { class: "msg", text: String(record.msg ?? "") }),
          ),
        );
      }
      shown = records.length;
      count.textContent = String(shown);
      empty.hidden = shown > 0;
      if (atEnd) list.scrollTop = list.scrollHeight;
    },
  };
}

function showJob(uuid) {
  const leaf = jobLeaves.get(uuid);
  const bar = h("progress", { max: "1", value: "0", id: "job-progress", "aria-label": "Job progress" });
  const pct = h("span", { class: "pct", text: "0%", "aria-hidden": "true" });
  const state = h("p", { class: "state", role: "status", "aria-live": "polite", text: "Waiting for the job…" });
  const result = h("dd", { class: "result", text: "—" });
  const statusText = h("dd", { class: "job-status", text: "—" });
  const cancel = h("button", { type: "button", class: "danger", text: "Cancel job" });
  const cancelNote = h("p", { class: "cancel-note", role: "status" });
  const logs = {
    events: logSection("events", "Events"),
    warnings: logSection("warnings", "Warnings"),
    errors: logSection("errors", "Errors"),
  };
  const data = h("pre", { class: "data", tabindex: "0", "aria-label": "Job data as JSON" });
  const dataSection = h("section", { class: "data-section", hidden: true }, h("h3", { text: "Data" }), data);
  show(
    "Job",
    h("p", { class: "meta" }, leaf ? `${leaf.name} · ` : "", h("code", { class: "uuid", text: uuid })),
    h("div", { class: "progress-row" }, bar, pct),
    state,
    h("dl", { class: "facts" }, h("dt", { text: "Status" }), statusText, h("dt", { text: "Result" }), result),
    h("div", { class: "actions" }, cancel, cancelNote),
    h("div", { class: "log-grid" }, logs.events.section, logs.warnings.section, logs.errors.section),
    dataSection,
  );

  let stopped = false;
  let timer = null;
  let progressTag = null;
  let infoTag = null;
  let announced = "";
  /** The stored `running` as last read, null while unknown. */
  let running = null;

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    cancelNote.textContent = "Asking the server to cancel…";
    try {
      const answer = await call(`${ROOT_PATH}/cancel/${uuid}`, { method: "POST" });
      const notes = {
        200: "Cancelled before it ran.",
        202: "Cancelling: the job stops at its next progress report.",
        409: "The job already has its result.",
      };
      cancelNote.textContent = notes[answer.status] || `Not cancelled: ${problem(answer)}`;
      if (answer.status !== 200 && answer.status !== 202 && answer.status !== 409) cancel.disabled = false;
    } catch (error) {
      cancelNote.textContent = `The server could not be reached: ${error.message}`;
      cancel.disabled = false;
    }
  });

  function showProgress(progress) {
    const completeness = Math.max(0, Math.min(1, Number(progress.completeness) || 0));
    bar.value = completeness;
    bar.setAttribute("aria-valuetext", percent(completeness));
    pct.textContent = percent(completeness);
    const code = progress.result;
    result.textContent = code === -1 ? "—" : String(code);
    const status = jobStatus(code, running);
    statusText.textContent = status || "—";
    if (status) main.dataset.jobStatus = status;
    else delete main.dataset.jobStatus;
    if (code === -1) {
      // spoken when the status changes and at every tenth, not at every poll
      const key = `${status} ${Math.floor(completeness * 10)}`;
      if (key !== announced) {
        announced = key;
        const done = `${percent(completeness)} done`;
        if (status === "queued") state.textContent = `Queued: waiting for a worker (${done}).`;
        else if (status === "running") state.textContent = `Running: ${done}.`;
        else state.textContent = `Waiting for its result: ${done}.`;
      }
    } else {
      state.textContent = status ? `${status[0].toUpperCase()}${status.slice(1)}: result ${code}.` : `Result ${code}.`;
      cancel.hidden = true;
      // "Cancelling" is over: say how it ended
      if (cancelNote.textContent) cancelNote.textContent = code === 410 ? "Cancelled." : "";
    }
  }

  async function tick() {
    if (stopped) return;
    let delay = document.hidden ? SLOW_POLL_MS : POLL_MS;
    try {
      const progress = await call(`${ROOT_PATH}/progress/${uuid}`, { etag: progressTag });
      if (stopped) return;
      if (progress.status === 404) {
        show("No such job", h("p", { text: `There is no job ${uuid} in this tree: the server answered ${problem(progress)}.` }));
        return;
      }
      if (progress.status === 200) {
        progressTag = progress.etag;
        const info = await call(`${ROOT_PATH}/info/${uuid}`, { etag: infoTag });
        if (stopped) return;
        if (info.status === 200) {
          infoTag = info.etag;
          for (const kind of Object.keys(logs)) logs[kind].update(info.data[kind]);
        }
        // Every write changes the ETag, taking the job included, so the
        // stored `running` is read again only when progress changed.
        if (HAS_DUMP && progress.data.result === -1) {
          const dump = await call(`${ROOT_PATH}/dump/${uuid}`);
          if (stopped) return;
          running = dump.status === 200 && dump.data ? dump.data.running === true : null;
        }
        showProgress(progress.data);
        if (progress.data.result !== -1) {
          const answer = await call(`${ROOT_PATH}/data/${uuid}`);
          if (stopped) return;
          data.textContent = answer.status === 200 ? JSON.stringify(answer.data, null, 2) : `The data could not be read: ${problem(answer)}`;
          dataSection.hidden = false;
          main.dataset.jobDone = "true";
          return; // finished: no more polling
        }
      } else if (progress.status !== 304) {
        state.textContent = `The progress could not be read: ${problem(progress)}; trying again.`;
        delay = SLOW_POLL_MS;
      }
    } catch (error) {
      state.textContent = `The server could not be reached (${error.message}); trying again.`;
      delay = SLOW_POLL_MS;
    }
    if (!stopped) timer = setTimeout(tick, delay);
  }
  tick();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      delete main.dataset.jobStatus;
      delete main.dataset.jobDone;
    },
  };
}

function showJobs() {
  const filterId = "status-filter";
  const filter = h("select", { id: filterId }, h("option", { value: "", text: "any" }), STATUSES.map((s) => h("option", { value: s, text: s })));
  filter.value = listStatus;
  const refresh = h("button", { type: "button", class: "secondary", text: "Refresh" });
  const note = h("p", { class: "list-note", role: "status" });
  const tbody = h("tbody");
  const table = h(
    "table",
    { class: "jobs" },
    h("caption", { class: "vh", text: "Recent jobs, newest first" }),
    h(
      "thead",
      {},
      h("tr", {}, ["Created (UTC)", "Job", "Status", "Progress", "Result"].map((t) => h("th", { scope: "col", text: t })), h("th", { scope: "col" }, h("span", { class: "vh", text: "Actions" }))),
    ),
    tbody,
  );
  const older = h("button", { type: "button", class: "secondary", text: "Older jobs", hidden: true });
  show(
    "Recent jobs",
    h("div", { class: "toolbar" }, h("label", { for: filterId, text: "Status" }), filter, refresh),
    note,
    table,
    older,
  );

  let stopped = false;
  let timer = null;
  let next = null;
  let lastText = "";
  let paged = false;

  function row(job) {
    const leaf = leavesByType.get(job.jobType);
    if (leaf) jobLeaves.set(job.uuid, leaf);
    const name = leaf ? leaf.name : job.jobType;
    const cells = [
      h("td", { text: String(job.createdAt).replace("T", " ").slice(0, 19) }),
      h("td", {}, h("a", { href: `#/job/${job.uuid}`, "data-uuid": job.uuid, "data-role": "open", text: name }), " ", h("code", { class: "short", text: job.uuid.slice(0, 8) })),
      h("td", {}, h("span", { class: `badge status-${job.status}`, text: job.status })),
      h("td", { text: percent(job.completeness) }),
      h("td", { text: job.result === -1 ? "—" : String(job.result) }),
    ];
    const actions = h("td");
    if (job.status === "queued" || job.status === "running") {
      actions.append(
        h("button", {
          type: "button",
          class: "danger small",
          "data-uuid": job.uuid,
          "data-role": "cancel",
          "aria-label": `Cancel ${name} ${job.uuid}`,
          text: "Cancel",
          onclick: (event) => cancelJob(job, event.currentTarget),
        }),
      );
    }
    cells.push(actions);
    return h("tr", { "data-uuid": job.uuid }, cells);
  }

  async function cancelJob(job, button) {
    button.disabled = true;
    try {
      const answer = await call(`${ROOT_PATH}/cancel/${job.uuid}`, { method: "POST" });
      const notes = { 200: "cancelled", 202: "cancelling", 409: "already finished" };
      note.textContent = `Job ${job.uuid}: ${notes[answer.status] || problem(answer)}.`;
    } catch (error) {
      note.textContent = `The server could not be reached: ${error.message}`;
    }
    load(false);
  }

  async function load(more) {
    clearTimeout(timer);
    const query = new URLSearchParams({ limit: String(LIST_LIMIT) });
    if (listStatus) query.set("status", listStatus);
    if (more && next) query.set("cursor", next);
    try {
      const answer = await call(`${ROOT_PATH}/jobs?${query}`);
      if (stopped) return;
      if (answer.status !== 200) {
        note.textContent = `The jobs could not be listed: ${problem(answer)}`;
      } else {
        const jobs = answer.data.jobs;
        if (more) {
          paged = true;
          tbody.append(...jobs.map(row));
        } else {
          const text = JSON.stringify(jobs);
          if (text !== lastText) {
            lastText = text;
            const focused = document.activeElement;
            const key = focused && tbody.contains(focused) ? [focused.dataset.uuid, focused.dataset.role] : null;
            tbody.replaceChildren(...jobs.map(row));
            if (key) tbody.querySelector(`[data-uuid="${CSS.escape(key[0])}"][data-role="${key[1]}"]`)?.focus();
          }
          if (!jobs.length) tbody.replaceChildren(h("tr", {}, h("td", { colspan: "6", class: "none", text: "No jobs yet." })));
        }
        if (!more || answer.data.next) next = answer.data.next;
        older.hidden = !next;
        main.dataset.listLoaded = String(Number(main.dataset.listLoaded || 0) + 1);
      }
    } catch (error) {
      note.textContent = `The server could not be reached: ${error.message}`;
    }
    // the first page again in a while, unless older pages are shown
    if (!stopped && !paged) timer = setTimeout(() => load(false), document.hidden ? 4 * LIST_MS : LIST_MS);
  }

  filter.addEventListener("change", () => {
    listStatus = filter.value;
    paged = false;
    lastText = "";
    load(false);
  });
  refresh.addEventListener("click", () => {
    paged = false;
    lastText = "";
    load(false);
  });
  older.addEventListener("click", () => load(true));
  load(false);
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      delete main.dataset.listLoaded;
    },
  };
}

// -- routing -----------------------------------------------------------------

function route() {
  const hash = location.hash || "#/";
  let match;
  let next;
  if ((match = /^#\/leaf(\/.*)$/.exec(hash))) {
    const path = decoded(match[1]);
    next = path === null ? () => showInvalidLink(hash) : () => showLeaf(path);
  } else if ((match = /^#\/job\/([0-9a-f-]{36})$/.exec(hash))) next = () => showJob(match[1]);
  else if (hash === "#/" || hash === "#") next = showJobs;
  else if (hash === "#/queues") next = () => showQueues({ call, show, problem, root: ROOT_PATH, own: page.queue });
  else if (hash.startsWith("#/")) next = () => showInvalidLink(hash);
  else return; // an anchor on the page, such as #main
  if (current) current.stop();
  current = next();
  markCurrent();
}

async function init() {
  try {
    const tree = await loadBranch(ROOT_PATH, page.title, page.description);
    treeNav.replaceChildren(
      h("h2", { text: "Jobs" }),
      tree.description ? h("p", { class: "desc", text: tree.description }) : null,
      renderBranch(tree),
    );
  } catch (error) {
    treeNav.replaceChildren(h("h2", { text: "Jobs" }), h("p", { class: "error", text: `The job tree could not be read: ${error.message}` }));
  }
  window.addEventListener("hashchange", route);
  route();
  document.body.dataset.ready = "true";
}

init();
