// The flask-spacewalk console: the job tree, a form per job, live jobs and
// the recent-jobs list, the workers and the queues, all from the tree's own
// REST API. Views are chosen by the URL's hash (#/, #/leaf/<path>,
// #/job/<uuid>, #/retry/<uuid>, #/workers, #/queues), so the browser's back
// button and links work. Every text from the server is set with
// textContent (see h() in form.js): job messages are data, never markup.

import { buildForm, h } from "./form.js";
import { showQueues } from "./queues.js";
import { showWorkers } from "./workers.js";

const page = document.body.dataset;
const SCRIPT_ROOT = page.scriptRoot || "";
const ROOT_PATH = (page.root || "").slice(SCRIPT_ROOT.length);
/** Whether the tree serves dump/<uuid>, the one answer that holds `running`. */
const HAS_DUMP = page.dump === "true";
/** How often a running job's progress is asked for (with If-None-Match). */
const POLL_MS = 300;
/** ... and when the tab is hidden or the server did not answer. */
const SLOW_POLL_MS = 2000;
/** Stream failures in a row (no answer in between) after which a job's
 * page polls instead; a stream the server ends in time just reconnects. */
const STREAM_FAILURES = 3;
/** How often the recent-jobs list is read again while it is shown. */
const LIST_MS = 2000;
const LIST_LIMIT = 20;
/** Jobs a bulk action's dry run counts per request (the API's cap) ... */
const COUNT_LIMIT = 10000;
/** ... and jobs it acts on per request, so that progress shows as it goes. */
const BULK_BATCH = 200;
/** The statuses each bulk action applies to, and how the bar names them. */
const BULK = {
  retry: { statuses: ["failed", "cancelled"], verb: "Retry", done: "Retried" },
  cancel: { statuses: ["queued", "running"], verb: "Cancel", done: "Cancelled" },
};
/** 1204 as "1,204". */
const thousands = (n) => n.toLocaleString("en");
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

/** What the form of a new job says, and what that of a retry says. */
const START_WORDS = { submit: "Start job", busy: "Starting the job…", not: "The job was not started", server: "The server did not start the job" };
const RETRY_WORDS = { submit: "Retry job", busy: "Retrying the job…", not: "The job was not retried", server: "The server did not retry the job" };

function showLeaf(path) {
  const leaf = leavesByPath.get(path);
  if (!leaf) {
    show("No such job", h("p", { text: `There is no job at ${path} in this tree.` }));
    return null;
  }
  const form = h("form", { novalidate: true, "aria-label": `${leaf.name} parameters` });
  show(
    leaf.name,
    leaf.description ? h("p", { class: "lead", text: leaf.description }) : null,
    h("p", { class: "meta" }, "Job type ", h("code", { text: leaf.jobType }), " · ", h("code", { text: `POST ${leaf.path}/job` })),
    form,
  );
  const view = { stopped: false, stop: () => (view.stopped = true) };
  paramsForm(form, leaf, view, {
    words: START_WORDS,
    hint: "an empty field is left out, so the job's default applies.",
    send: (body, query) => call(`${leaf.path}/job${query}`, { method: "POST", json: body }),
    done: (answer) => answer.status === 201 && answer.data.uuid,
  });
  return view;
}

/**
 * Fills `form` with the fields of `leaf`'s post-schema (starting from
 * `values` where given), the Options fold and a submit button, which sends
 * the body and the options' query string with `send(body, query)`; `done`
 * says which job an answer started, then shown.
 */
function paramsForm(form, leaf, view, { words, hint, values, send, done }) {
  const summary = h("div", { class: "summary", role: "alert", tabindex: "-1", hidden: true });
  const status = h("p", { class: "form-status", role: "status" });
  const submit = h("button", { type: "submit", text: words.submit });
  form.replaceChildren(h("p", { text: "Loading the parameters…" }));
  call(`${leaf.path}/post-schema`).then(
    (answer) => {
      if (view.stopped) return;
      if (answer.status !== 200) {
        form.replaceChildren(h("p", { class: "error", text: `The parameters could not be read: ${problem(answer)}` }));
        return;
      }
      const fields = buildForm(answer.data.postSchema, values);
      const options = startOptions();
      form.replaceChildren(
        h("p", { class: "hint" }, "Fields marked ", h("span", { class: "req", text: "*" }), ` are required; ${hint}`),
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
        submitForm(leaf, fields, { summary, status, submit, options, words, send, done });
      });
    },
    (error) => {
      if (!view.stopped) form.replaceChildren(h("p", { class: "error", text: `The server could not be reached: ${error.message}` }));
    },
  );
}

function showSummary(fields, summary, rest, message, words = START_WORDS) {
  const invalid = fields.invalidFields();
  const items = invalid.map((field) => h("li", { text: `${field.label || field.name}: ${(field.errors || []).join(" ")}` }));
  for (const [name, messages] of rest) items.push(h("li", { text: `${name}: ${[].concat(messages).join(" ")}` }));
  const n = items.length;
  summary.replaceChildren(
    h("p", { class: "summary-title", text: message || `${words.not}: ${n} field${n === 1 ? " needs" : "s need"} attention.` }),
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

async function submitForm(leaf, fields, { summary, status, submit, options, words, send, done }) {
  summary.hidden = true;
  status.textContent = "";
  fields.clearErrors();
  if (!fields.validate()) {
    showSummary(fields, summary, [], "", words);
    return;
  }
  submit.disabled = true;
  status.textContent = words.busy;
  try {
    const answer = await send(fields.value(), options.query());
    const uuid = done(answer);
    if (uuid) {
      jobLeaves.set(uuid, leaf);
      location.hash = `#/job/${uuid}`;
      return;
    }
    status.textContent = "";
    if (answer.status === 422 && answer.data && answer.data.errors) {
      const rest = fields.showServerErrors(answer.data.errors);
      showSummary(fields, summary, rest, `${words.server}: ${answer.data.message}.`, words);
    } else {
      status.textContent = `${words.not}: ${problem(answer)}`;
    }
  } catch (error) {
    status.textContent = `The server could not be reached: ${error.message}`;
  } finally {
    submit.disabled = false;
  }
}

/**
 * A failed or cancelled job's form, filled in with its stored Params (read
 * from dump), to edit and POST to retry/<uuid>. Without the dump route the
 * stored values cannot be shown: the job is retried with them as they are.
 */
function showRetry(uuid) {
  const form = h("form", { novalidate: true, "aria-label": "Retry parameters" });
  const back = h("a", { href: `#/job/${uuid}`, text: "back to the job" });
  show("Retry job", h("p", { class: "meta" }, h("code", { class: "uuid", text: uuid }), " · ", back), form);
  const view = { stopped: false, stop: () => (view.stopped = true) };
  const send = (body, query) => call(`${ROOT_PATH}/retry/${uuid}${query}`, { method: "POST", json: body });
  const done = (answer) => answer.status === 200 && uuid;
  (async () => {
    const dump = HAS_DUMP ? await call(`${ROOT_PATH}/dump/${uuid}`) : null;
    if (view.stopped) return;
    if (dump && dump.status !== 200) {
      form.replaceChildren(h("p", { class: "error", text: `The job could not be read: ${problem(dump)}` }));
      return;
    }
    // without the stored values a form would send its defaults over them
    const leaf = dump ? leavesByType.get(dump.data.jobType) : null;
    const status = dump ? jobStatus(dump.data.resultCode, dump.data.running === true) : null;
    const note = status && !BULK.retry.statuses.includes(status) ? `This job is ${status}: only a failed or cancelled job is retried. ` : "";
    if (leaf) {
      main.querySelector("h2").textContent = `Retry ${leaf.name}`;
      paramsForm(form, leaf, view, {
        words: RETRY_WORDS,
        hint: `${note}an empty field is left out, so the value the job has stays.`,
        values: dump.data,
        send,
        done,
      });
      return;
    }
    // no dump route: no stored values to fill a form in with
    const said = h("p", { class: "form-status", role: "status" });
    const submit = h("button", { type: "submit", text: RETRY_WORDS.submit });
    form.replaceChildren(h("p", { class: "hint", text: "The job runs again with the parameters it has." }), h("div", { class: "actions" }, submit), said);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      submit.disabled = true;
      said.textContent = RETRY_WORDS.busy;
      try {
        const answer = await send({}, "");
        if (done(answer)) location.hash = `#/job/${uuid}`;
        else said.textContent = `${RETRY_WORDS.not}: ${problem(answer)}`;
      } catch (error) {
        said.textContent = `The server could not be reached: ${error.message}`;
      } finally {
        submit.disabled = false;
      }
    });
  })().catch((error) => {
    if (!view.stopped) form.replaceChildren(h("p", { class: "error", text: `The server could not be reached: ${error.message}` }));
  });
  return view;
}

function logSection(kind, title) {
  const count = h("span", { class: "count", text: "0" });
  const list = h("ol", { class: `log log-${kind}` });
  const empty = h("p", { class: "none", text: "None yet." });
  const section = h("section", { class: `logs ${kind}`, "aria-label": title }, h("h3", {}, `${title} `, count), empty, list);
  let shown = 0;
  function add(record) {
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
    shown += 1;
  }
  /** Adds the records, keeping the newest in sight if the reader was there. */
  function adding(records) {
    const atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
    records.forEach(add);
    count.textContent = String(shown);
    empty.hidden = shown > 0;
    if (atEnd) list.scrollTop = list.scrollHeight;
  }
  return {
    section,
    /** The whole list as info answers it: the records not shown yet. */
    update(records) {
      if (!Array.isArray(records)) return;
      if (records.length < shown) {
        list.replaceChildren();
        shown = 0;
      }
      adding(records.slice(shown));
    },
    /** One record of the event stream (it sends each list in its order). */
    append(record) {
      adding([record]);
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
  const retry = h("a", { class: "button", href: `#/retry/${uuid}`, text: "Retry", hidden: true });
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
    h("div", { class: "actions" }, cancel, retry, cancelNote),
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
      retry.hidden = !BULK.retry.statuses.includes(status);
      // "Cancelling" is over: say how it ended
      if (cancelNote.textContent) cancelNote.textContent = code === 410 ? "Cancelled." : "";
    }
  }

  /** Reads `running` again (only dump holds it) while the job is unfinished. */
  async function readRunning(progress) {
    if (HAS_DUMP && progress.result === -1) {
      const dump = await call(`${ROOT_PATH}/dump/${uuid}`);
      running = dump.status === 200 && dump.data ? dump.data.running === true : null;
    }
  }

  async function finished(progress) {
    showProgress(progress);
    const answer = await call(`${ROOT_PATH}/data/${uuid}`);
    if (stopped) return;
    data.textContent = answer.status === 200 ? JSON.stringify(answer.data, null, 2) : `The data could not be read: ${problem(answer)}`;
    dataSection.hidden = false;
    main.dataset.jobDone = "true";
  }

  // Following the job: its event stream (GET events/<uuid>) when the
  // browser has EventSource, else, or once the stream fails again and
  // again, polling progress and info with If-None-Match.
  let source = null;
  /** Bumped by each progress shown, so an older one still reading `running` is dropped. */
  let shownProgress = 0;
  /** The last progress the stream sent. */
  let lastProgress = null;
  /** Whether a log line's look at `running` is under way. */
  let looking = false;

  async function showWithRunning(progress) {
    lastProgress = progress;
    const mine = ++shownProgress;
    try {
      await readRunning(progress);
    } catch {
      running = null;
    }
    if (!stopped && mine === shownProgress) showProgress(progress);
  }

  function follow() {
    if (typeof EventSource !== "function") {
      tick();
      return;
    }
    let failures = 0;
    const stream = new EventSource(url(`${ROOT_PATH}/events/${uuid}`));
    source = stream;
    main.dataset.jobStream = "open";
    const drop = () => {
      stream.close();
      if (source === stream) source = null;
    };
    stream.addEventListener("open", () => {
      failures = 0;
    });
    stream.addEventListener("log", (event) => {
      failures = 0;
      const record = JSON.parse(event.data);
      const list = logs[`${record.kind}s`];
      if (list) list.append(record);
      // a job that logs has started: a queued one shown is worth a look,
      // since starting changes no progress
      // (one look at a time: a burst of lines asks once)
      if (lastProgress && running !== true && !looking) {
        looking = true;
        showWithRunning(lastProgress).finally(() => {
          looking = false;
        });
      }
    });
    stream.addEventListener("progress", (event) => {
      failures = 0;
      showWithRunning(JSON.parse(event.data));
    });
    stream.addEventListener("end", (event) => {
      // the server closes the stream; without this the browser would reconnect
      drop();
      shownProgress += 1;
      finished(JSON.parse(event.data)).catch((error) => {
        state.textContent = `The data could not be read: ${error.message}`;
      });
    });
    stream.addEventListener("error", () => {
      if (stopped || source !== stream) return;
      failures += 1;
      // CLOSED: the answer was no stream (a 404, say), which polling shows
      if (stream.readyState === EventSource.CLOSED || failures >= STREAM_FAILURES) {
        drop();
        main.dataset.jobStream = "polling";
        tick();
      }
    });
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
        await readRunning(progress.data);
        if (stopped) return;
        if (progress.data.result !== -1) {
          await finished(progress.data);
          return; // finished: no more polling
        }
        showProgress(progress.data);
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
  follow();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      if (source) source.close();
      delete main.dataset.jobStatus;
      delete main.dataset.jobDone;
      delete main.dataset.jobStream;
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
  const bulk = bulkBar(() => load(false));
  show(
    "Recent jobs",
    h("div", { class: "toolbar" }, h("label", { for: filterId, text: "Status" }), filter, refresh),
    bulk.element,
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
    if (BULK.retry.statuses.includes(job.status)) {
      actions.append(h("a", { class: "button small", href: `#/retry/${job.uuid}`, "data-uuid": job.uuid, "data-role": "retry", "aria-label": `Retry ${name} ${job.uuid}`, text: "Retry" }));
    }
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
    bulk.reset();
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
      bulk.stop();
      clearTimeout(timer);
      delete main.dataset.listLoaded;
    },
  };
}

/**
 * The bulk bar of the job list: retry, or cancel, every job the list's
 * filter selects that the action applies to. A first click counts them with
 * dry runs; the count is the button that acts, batch by batch following
 * `next`, showing its progress and then the total done. `changed` is
 * called once the jobs changed.
 */
function bulkBar(changed) {
  const note = h("p", { class: "bulk-note", role: "status" });
  const bar = h("progress", { max: "1", value: "0", hidden: true, "aria-label": "Bulk action progress" });
  const buttons = h("span", { class: "bulk-buttons" });
  const element = h("div", { class: "bulk", role: "group", "aria-label": "Act on the jobs of this filter" }, buttons, bar, note);
  let run = 0; // each reset or stop makes a running count or action stale

  /** The statuses `action` applies to under the filter ([] when none). */
  const statusesOf = (action) => BULK[action].statuses.filter((s) => !listStatus || s === listStatus);
  const query = (statuses, extra) => new URLSearchParams([...statuses.map((s) => ["status", s]), ...Object.entries(extra)]);

  function reset() {
    run += 1;
    note.textContent = "";
    bar.hidden = true;
    const offers = Object.keys(BULK).filter((action) => statusesOf(action).length).map((action) =>
      h("button", { type: "button", class: action === "cancel" ? "danger secondary" : "secondary", text: `${BULK[action].verb} ${statusesOf(action).join(" or ")} jobs…`, onclick: () => countFor(action) }));
    buttons.replaceChildren(...offers);
  }

  async function countFor(action) {
    const mine = ++run;
    const statuses = statusesOf(action);
    const words = statuses.join(" or ");
    buttons.replaceChildren();
    note.textContent = `Counting the ${words} jobs…`;
    let total = 0;
    let cursor = null;
    try {
      do {
        const answer = await call(`${ROOT_PATH}/jobs/${action}?${query(statuses, { dryRun: "true", limit: String(COUNT_LIMIT), ...(cursor ? { cursor } : {}) })}`, { method: "POST" });
        if (mine !== run) return;
        if (answer.status !== 200) throw new Error(problem(answer));
        total += answer.data.matched;
        cursor = answer.data.next;
        if (cursor) note.textContent = `Counting the ${words} jobs… ${thousands(total)} so far.`;
      } while (cursor);
    } catch (error) {
      if (mine !== run) return;
      note.textContent = `The jobs could not be counted: ${error.message}`;
      buttons.replaceChildren(h("button", { type: "button", class: "secondary", text: "Back", onclick: reset }));
      return;
    }
    if (total === 0) {
      note.textContent = `No ${words} jobs match this filter.`;
      buttons.replaceChildren(h("button", { type: "button", class: "secondary", text: "Back", onclick: reset }));
      return;
    }
    note.textContent = "";
    const go = h("button", { type: "button", class: action === "cancel" ? "danger" : "", "data-role": `bulk-${action}`, text: `${BULK[action].verb} the ${thousands(total)} ${words} job${total === 1 ? "" : "s"} matching this filter`, onclick: () => act(action, total) });
    buttons.replaceChildren(go, h("button", { type: "button", class: "secondary", text: "Never mind", onclick: reset }));
    go.focus();
  }

  async function act(action, total) {
    const mine = ++run;
    const statuses = statusesOf(action);
    buttons.replaceChildren();
    bar.hidden = false;
    bar.max = total;
    bar.value = 0;
    let read = 0;
    let done = 0;
    let cursor = null;
    const said = () => `${BULK[action].done} ${thousands(done)} of the ${thousands(read)} jobs read`;
    try {
      do {
        const answer = await call(`${ROOT_PATH}/jobs/${action}?${query(statuses, { limit: String(BULK_BATCH), ...(cursor ? { cursor } : {}) })}`, { method: "POST" });
        if (mine !== run) return;
        if (answer.status !== 200) throw new Error(problem(answer));
        read += answer.data.matched;
        done += answer.data.done;
        cursor = answer.data.next;
        bar.value = Math.min(read, total);
        note.textContent = `${said()}…`;
        changed();
      } while (cursor);
      // the ones not done changed meanwhile: someone else retried or cancelled them
      note.textContent = `${said()}; done.`;
    } catch (error) {
      if (mine !== run) return;
      note.textContent = `${said()}; then stopped: ${error.message}`;
    }
    bar.hidden = true;
    buttons.replaceChildren(h("button", { type: "button", class: "secondary", text: "Back", onclick: reset }));
  }

  reset();
  return { element, reset, stop: () => (run += 1) };
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
  else if ((match = /^#\/retry\/([0-9a-f-]{36})$/.exec(hash))) next = () => showRetry(match[1]);
  else if (hash === "#/" || hash === "#") next = showJobs;
  else if (hash === "#/workers") next = () => showWorkers({ call, problem, show, rootPath: ROOT_PATH });
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
