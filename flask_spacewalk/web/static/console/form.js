// A form built from a leaf's post-schema (draft-07 JSON Schema), part of the
// flask-spacewalk console. No framework, no build step: every node is made
// with createElement and every text set with textContent, so nothing from
// the schema or the server is ever parsed as HTML.
//
// buildForm(postSchema, values) returns {element, validate(), value(),
// showServerErrors(errors), clearErrors()}; the fields start from `values`
// (a stored job's Params, by field) where given, else from the schema's
// defaults. A field left empty is left out of the body (the server fills in
// its default); numbers and integers are sent as JSON numbers, booleans as
// true/false, arrays and objects as such.

let nextId = 0;
const MAX_DEPTH = 8;

/** An element with attributes (strings or properties) and children. */
export function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function uid(prefix = "f") {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/** The schema with $ref followed (to #/definitions/...) and its null type
 * (a type list with "null", or an anyOf/oneOf branch of null) taken out. */
function resolve(schema, root, depth = 0) {
  if (schema === true || schema === undefined || schema === null) return { schema: {}, nullable: false };
  if (schema === false) return { schema: { not: {} }, nullable: false };
  let s = schema;
  let nullable = false;
  let guard = 0;
  while (typeof s.$ref === "string" && guard < 20) {
    guard += 1;
    const match = /^#\/definitions\/(.+)$/.exec(s.$ref);
    const target = match && root.definitions ? root.definitions[decodeURIComponent(match[1])] : undefined;
    if (!target) return { schema: {}, nullable: false, unknown: true };
    // draft 7 ignores $ref's siblings but annotations, which we keep
    const { $ref, ...siblings } = s;
    const notes = {};
    for (const key of ["title", "description", "default"]) if (key in siblings) notes[key] = siblings[key];
    s = { ...target, ...notes };
  }
  for (const key of ["anyOf", "oneOf"]) {
    if (Array.isArray(s[key])) {
      const rest = s[key].filter((b) => !(b && (b.type === "null" || (Array.isArray(b.type) && b.type.length === 1 && b.type[0] === "null"))));
      if (rest.length < s[key].length) nullable = true;
      if (rest.length === 1) {
        const { [key]: _, ...others } = s;
        const inner = resolve(rest[0], root, depth + 1);
        s = { ...inner.schema, ...others };
        nullable = nullable || inner.nullable;
      }
    }
  }
  if (Array.isArray(s.type)) {
    const types = s.type.filter((t) => t !== "null");
    nullable = nullable || types.length < s.type.length;
    s = { ...s, type: types.length === 1 ? types[0] : types };
  } else if (s.type === "null") {
    nullable = true;
  }
  return { schema: s, nullable };
}

function kindOf(s) {
  if (Array.isArray(s.enum)) return "enum";
  if (s.anyOf || s.oneOf || s.allOf || Array.isArray(s.type)) return "json";
  switch (s.type) {
    case "boolean":
      return "boolean";
    case "integer":
    case "number":
      return "number";
    case "string":
      return "string";
    case "array":
      return s.items && !Array.isArray(s.items) && typeof s.items === "object" ? "array" : "json";
    case "object":
      return s.properties ? "object" : "json";
    default:
      return s.properties ? "object" : "json";
  }
}

function describe(s, kind, nullable) {
  const parts = [];
  if (s.description) parts.push(s.description);
  const facts = [];
  if (kind === "number") facts.push(s.type === "integer" ? "whole number" : "number");
  if (kind === "json") facts.push("JSON");
  if (s.format) facts.push(s.format);
  const lo = s.minimum ?? s.exclusiveMinimum;
  const hi = s.maximum ?? s.exclusiveMaximum;
  const big = (v) => typeof v === "number" && Math.abs(v) >= 1e300;
  if (lo !== undefined && !big(lo)) facts.push(`${"exclusiveMinimum" in s ? "more than" : "at least"} ${lo}`);
  if (hi !== undefined && !big(hi)) facts.push(`${"exclusiveMaximum" in s ? "less than" : "at most"} ${hi}`);
  const count = (n, what) => `${n} ${what}${n === 1 ? "" : "s"}`;
  if (s.minLength !== undefined) facts.push(`at least ${count(s.minLength, "character")}`);
  if (s.maxLength !== undefined) facts.push(`at most ${count(s.maxLength, "character")}`);
  if (s.minItems !== undefined) facts.push(`at least ${count(s.minItems, "item")}`);
  if (s.maxItems !== undefined) facts.push(`at most ${count(s.maxItems, "item")}`);
  if (s.pattern && !s.format) facts.push(`matching ${s.pattern}`);
  if (nullable) facts.push("may be empty");
  if (s.default !== undefined && kind !== "object") facts.push(`default ${JSON.stringify(s.default)}`);
  if (facts.length) parts.push(facts.join(", "));
  return parts.join(". ");
}

function codePoints(text) {
  return [...text].length;
}

/** JSON Schema patterns are ECMA-262 and unanchored. */
function patternTest(pattern, text) {
  let re;
  try {
    re = new RegExp(pattern, "u");
  } catch {
    try {
      re = new RegExp(pattern);
    } catch {
      return true; // the server checks it anyway
    }
  }
  return re.test(text);
}

/** The field parts every kind shares: label, hint, error message. */
class Field {
  constructor(name, label, schema, { required, nullable, kind, item, initial }) {
    this.name = name;
    /** What the control starts with: the given value, else the default. */
    this.start = initial !== undefined ? initial : schema.default;
    // an array's item must have a value, but says so by being there
    this.marked = required && !item;
    this.label = label;
    this.schema = schema;
    this.required = required;
    this.nullable = nullable;
    this.kind = kind;
    this.id = uid();
    this.hint = describe(schema, kind, nullable);
    this.hintEl = this.hint ? h("p", { class: "hint", id: `${this.id}-hint`, text: this.hint }) : null;
    this.errorEl = h("p", { class: "field-error", id: `${this.id}-error`, hidden: true });
  }

  labelEl(forId = this.id) {
    return h(
      "label",
      { for: forId },
      this.label,
      this.marked ? h("span", { class: "req", "aria-hidden": "true", text: " *" }) : null,
      this.marked ? h("span", { class: "vh", text: " (required)" }) : null,
    );
  }

  describedBy() {
    return [this.hintEl ? this.hintEl.id : null, this.errorEl.id].filter(Boolean).join(" ");
  }

  showError(messages) {
    const list = Array.isArray(messages) ? messages : [messages];
    this.errorEl.textContent = list.join(" ");
    this.errorEl.hidden = false;
    this.wrapper.classList.add("invalid");
    if (this.control) this.control.setAttribute("aria-invalid", "true");
    this.errors = list;
  }

  clearError() {
    this.errorEl.textContent = "";
    this.errorEl.hidden = true;
    this.wrapper.classList.remove("invalid");
    if (this.control) this.control.removeAttribute("aria-invalid");
    this.errors = null;
  }

  focus() {
    (this.control || this.wrapper.querySelector("input, select, textarea, button"))?.focus();
  }

  find() {
    return null;
  }

  /** A check the control's own constraints cannot express ("" when none). */
  customError() {
    return "";
  }

  /** Check the control (its constraints and customError()), showing the error. */
  validate() {
    this.control.setCustomValidity(this.customError());
    if (this.control.checkValidity()) {
      this.clearError();
      return true;
    }
    this.showError(this.control.validationMessage);
    return false;
  }

  /** Fields with errors shown, depth first. */
  invalidFields() {
    return this.errors ? [this] : [];
  }
}

class InputField extends Field {
  constructor(name, label, schema, opts) {
    super(name, label, schema, opts);
    const s = schema;
    const attrs = { id: this.id, name, "aria-describedby": this.describedBy(), required: this.required };
    if (this.kind === "number") {
      Object.assign(attrs, {
        type: "number",
        step: s.type === "integer" ? "1" : "any",
        inputmode: s.type === "integer" ? "numeric" : "decimal",
      });
      if (typeof s.minimum === "number") attrs.min = String(s.minimum);
      else if (s.type === "integer" && typeof s.exclusiveMinimum === "number") attrs.min = String(Math.floor(s.exclusiveMinimum) + 1);
      if (typeof s.maximum === "number") attrs.max = String(s.maximum);
      else if (s.type === "integer" && typeof s.exclusiveMaximum === "number") attrs.max = String(Math.ceil(s.exclusiveMaximum) - 1);
    } else {
      const types = { date: "date", email: "email", uri: "url", url: "url" };
      attrs.type = types[s.format] || "text";
      if (s.format === "date-time") attrs.placeholder = "2024-05-01T12:00:00Z";
      if (s.format === "uuid") attrs.placeholder = "xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx";
      attrs.spellcheck = "false";
    }
    this.control = h("input", attrs);
    if (this.start !== undefined && this.start !== null) this.control.value = String(this.start);
    // errors are shown on submit; once shown, they go as soon as the value is right
    this.control.addEventListener("input", () => this.errors && this.validate());
    this.wrapper = h("div", { class: `field field-${this.kind}` }, this.labelEl(), this.control, this.hintEl, this.errorEl);
  }

  customError() {
    const s = this.schema;
    const text = this.control.value;
    if (text === "" || this.control.validity.badInput) return "";
    if (this.kind === "number") {
      const n = Number(text);
      if (!Number.isFinite(n)) return "Enter a number.";
      if (s.type === "integer" && !Number.isInteger(n)) return "Enter a whole number.";
      if (typeof s.exclusiveMinimum === "number" && !(n > s.exclusiveMinimum)) return `Must be more than ${s.exclusiveMinimum}.`;
      if (typeof s.exclusiveMaximum === "number" && !(n < s.exclusiveMaximum)) return `Must be less than ${s.exclusiveMaximum}.`;
      if (typeof s.multipleOf === "number" && !Number.isInteger(n / s.multipleOf)) return `Must be a multiple of ${s.multipleOf}.`;
      return "";
    }
    if (s.minLength !== undefined && codePoints(text) < s.minLength) return `Use at least ${s.minLength} characters.`;
    if (s.maxLength !== undefined && codePoints(text) > s.maxLength) return `Use at most ${s.maxLength} characters.`;
    if (s.pattern && !patternTest(s.pattern, text)) return s.format ? `Not a valid ${s.format}.` : `Must match ${s.pattern}.`;
    return "";
  }

  value() {
    const text = this.control.value;
    if (text === "") return undefined;
    return this.kind === "number" ? Number(text) : text;
  }
}

class SelectField extends Field {
  constructor(name, label, schema, opts) {
    super(name, label, schema, opts);
    // enum values by option index; "" is "not set" (left out of the body)
    this.values = this.kind === "boolean" ? [true, false] : schema.enum.slice();
    const hasDefault = schema.default !== undefined;
    this.control = h("select", { id: this.id, name, "aria-describedby": this.describedBy(), required: this.required });
    if (!hasDefault || this.required) this.control.append(h("option", { value: "", text: this.required ? "Choose…" : "(not set)" }));
    this.values.forEach((v, i) => {
      const option = h("option", { value: String(i), text: typeof v === "string" ? v : JSON.stringify(v) });
      if (this.start !== undefined && JSON.stringify(v) === JSON.stringify(this.start)) option.selected = true;
      this.control.append(option);
    });
    // errors are shown on submit; once shown, they go as soon as the value is right
    this.control.addEventListener("input", () => this.errors && this.validate());
    this.wrapper = h("div", { class: `field field-select` }, this.labelEl(), this.control, this.hintEl, this.errorEl);
  }

  value() {
    return this.control.value === "" ? undefined : this.values[Number(this.control.value)];
  }
}

class CheckboxField extends Field {
  constructor(name, label, schema, opts) {
    super(name, label, schema, opts);
    this.control = h("input", { type: "checkbox", id: this.id, name, "aria-describedby": this.describedBy() });
    this.control.checked = this.start === true;
    this.wrapper = h("div", { class: "field field-checkbox" }, this.control, " ", this.labelEl(), this.hintEl, this.errorEl);
  }

  validate() {
    this.clearError();
    return true;
  }

  value() {
    return this.control.checked;
  }
}

class JsonField extends Field {
  constructor(name, label, schema, opts) {
    super(name, label, schema, opts);
    this.control = h("textarea", { id: this.id, name, rows: 3, spellcheck: "false", "aria-describedby": this.describedBy(), required: this.required });
    if (this.start !== undefined && this.start !== null) this.control.value = JSON.stringify(this.start);
    // errors are shown on submit; once shown, they go as soon as the value is right
    this.control.addEventListener("input", () => this.errors && this.validate());
    this.wrapper = h("div", { class: "field field-json" }, this.labelEl(), this.control, this.hintEl, this.errorEl);
  }

  customError() {
    const text = this.control.value.trim();
    if (text === "") return "";
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch (error) {
      return `Not valid JSON: ${error.message}`;
    }
    const t = this.schema.type;
    const actual = Array.isArray(parsed) ? "array" : parsed === null ? "null" : typeof parsed;
    if (t === "object" && actual !== "object") return "Enter a JSON object ({...}).";
    if (t === "array" && actual !== "array") return "Enter a JSON array ([...]).";
    return "";
  }

  value() {
    const text = this.control.value.trim();
    return text === "" ? undefined : JSON.parse(text);
  }
}

class ObjectField extends Field {
  /** top: the Params object itself, whose fields stand in the form. */
  constructor(name, label, schema, opts, root, depth, top = false) {
    super(name, label, schema, opts);
    this.children = new Map();
    const required = new Set(schema.required || []);
    // the object's value (given or default) is where its fields start
    const start = this.start !== null && typeof this.start === "object" ? this.start : {};
    for (const [key, sub] of Object.entries(schema.properties || {})) {
      const childName = top ? key : `${name}.${key}`;
      this.children.set(key, makeField(childName, (sub && sub.title) || key, sub, required.has(key), root, depth + 1, false, start[key]));
    }
    const inner = [...this.children.values()].map((f) => f.wrapper);
    if (top) {
      this.wrapper = h("div", { class: "fields" }, inner, this.errorEl);
      return;
    }
    this.body = h("fieldset", { class: "plain" }, inner);
    const legend = h("legend", {}, this.label, this.marked ? h("span", { class: "req", "aria-hidden": "true", text: " *" }) : null);
    this.wrapper = h("fieldset", { class: "field object", "aria-describedby": this.describedBy() }, legend);
    if (!this.required) {
      // An optional object is sent only when asked for; while it is not, its
      // fields are disabled, so the browser does not check them either.
      const toggleId = uid();
      this.toggle = h("input", { type: "checkbox", id: toggleId });
      this.toggle.checked = this.start !== undefined && this.start !== null;
      this.toggle.addEventListener("change", () => this.sync());
      this.wrapper.append(h("div", { class: "field-checkbox" }, this.toggle, " ", h("label", { for: toggleId, text: `Set ${this.label}` })));
      this.sync();
    }
    this.wrapper.append(this.hintEl || "", this.body, this.errorEl);
  }

  sync() {
    this.body.disabled = !this.toggle.checked;
    this.body.hidden = !this.toggle.checked;
  }

  included() {
    return !this.toggle || this.toggle.checked;
  }

  validate() {
    this.clearError();
    if (!this.included()) return true;
    let ok = true;
    for (const child of this.children.values()) ok = child.validate() && ok;
    return ok;
  }

  value() {
    if (!this.included()) return undefined;
    const out = {};
    for (const [key, child] of this.children) {
      const v = child.value();
      if (v !== undefined) out[key] = v;
    }
    return out;
  }

  find(parts) {
    const child = this.children.get(parts[0]);
    if (!child) return null;
    return parts.length === 1 ? child : child.find(parts.slice(1));
  }

  focus() {
    if (this.toggle && !this.toggle.checked) this.toggle.focus();
    else super.focus();
  }

  invalidFields() {
    const own = this.errors ? [this] : [];
    return own.concat(...[...this.children.values()].map((c) => c.invalidFields()));
  }
}

class ArrayField extends Field {
  constructor(name, label, schema, opts, root, depth) {
    super(name, label, schema, opts);
    this.root = root;
    this.depth = depth;
    this.items = [];
    this.list = h("ol", { class: "items" });
    this.add = h("button", { type: "button", class: "secondary", text: `Add ${label} item`, onclick: () => this.addItem(undefined, true) });
    const legend = h("legend", {}, this.label, this.marked ? h("span", { class: "req", "aria-hidden": "true", text: " *" }) : null);
    this.wrapper = h("fieldset", { class: "field array", "aria-describedby": this.describedBy() }, legend, this.hintEl, this.list, this.add, this.errorEl);
    this.control = null;
    for (const v of Array.isArray(this.start) ? this.start : []) this.addItem(v, false);
    this.sync();
  }

  addItem(initial, focus) {
    const field = makeField(`${this.name}.${this.items.length}`, "", this.schema.items || {}, true, this.root, this.depth + 1, true, initial);
    const remove = h("button", { type: "button", class: "secondary small" });
    const li = h("li", {}, field.wrapper, remove);
    const item = { field, li, remove };
    remove.addEventListener("click", () => {
      this.items.splice(this.items.indexOf(item), 1);
      li.remove();
      this.sync();
      this.add.focus();
    });
    this.items.push(item);
    this.list.append(li);
    this.sync();
    if (focus) field.focus();
  }

  sync() {
    this.items.forEach((item, i) => {
      const text = `${this.label} item ${i + 1}`;
      item.field.label = text;
      const labelEl = item.field.wrapper.querySelector(":scope > label, :scope > legend");
      if (labelEl) labelEl.firstChild.textContent = text;
      item.remove.textContent = "Remove";
      item.remove.setAttribute("aria-label", `Remove ${text}`);
    });
    const max = this.schema.maxItems;
    this.add.disabled = max !== undefined && this.items.length >= max;
  }

  validate() {
    let ok = true;
    for (const item of this.items) ok = item.field.validate() && ok;
    const s = this.schema;
    const n = this.items.length;
    if (s.minItems !== undefined && n < s.minItems && (n > 0 || this.sendEmpty())) {
      this.showError(`Add at least ${s.minItems} item${s.minItems === 1 ? "" : "s"}.`);
      return false;
    }
    if (s.maxItems !== undefined && n > s.maxItems) {
      this.showError(`Use at most ${s.maxItems} items.`);
      return false;
    }
    this.clearError();
    return ok;
  }

  /** No items: [] when required or when the default had some, else left out. */
  sendEmpty() {
    return this.required || (Array.isArray(this.schema.default) && this.schema.default.length > 0);
  }

  value() {
    if (this.items.length === 0 && !this.sendEmpty()) return undefined;
    return this.items.map((item) => item.field.value());
  }

  find(parts) {
    const item = this.items[Number(parts[0])];
    if (!/^\d+$/.test(parts[0]) || !item) return null;
    return parts.length === 1 ? item.field : item.field.find(parts.slice(1));
  }

  focus() {
    (this.items[0] ? this.items[0].field : this.add).focus();
  }

  invalidFields() {
    const own = this.errors ? [this] : [];
    return own.concat(...this.items.map((item) => item.field.invalidFields()));
  }
}

function makeField(name, label, rawSchema, required, root, depth, item = false, initial = undefined) {
  const { schema, nullable } = resolve(rawSchema, root);
  let kind = depth > MAX_DEPTH ? "json" : kindOf(schema);
  if (kind === "boolean" && schema.default === undefined && !required) kind = "enum-boolean";
  const opts = { required, nullable, kind, item, initial };
  switch (kind) {
    case "enum":
      return new SelectField(name, label, schema, opts);
    case "enum-boolean":
      return new SelectField(name, label, schema, { ...opts, kind: "boolean" });
    case "boolean":
      return new CheckboxField(name, label, schema, opts);
    case "number":
    case "string":
      return new InputField(name, label, schema, opts);
    case "object":
      return new ObjectField(name, label, schema, opts, root, depth);
    case "array":
      return new ArrayField(name, label, schema, opts, root, depth);
    default:
      return new JsonField(name, label, schema, opts);
  }
}

/** The form fields of a post-schema, starting from `values` where given. */
export function buildForm(postSchema, values = undefined) {
  const { schema } = resolve(postSchema, postSchema);
  const top = new ObjectField("", "", schema, { required: true, nullable: false, kind: "object", initial: values }, postSchema, 0, true);
  if (top.children.size === 0) top.wrapper.prepend(h("p", { class: "hint", text: "This job takes no parameters." }));
  return {
    element: top.wrapper,
    validate: () => top.validate(),
    value: () => top.value(),
    clearErrors() {
      for (const field of top.invalidFields()) field.clearError();
    },
    invalidFields: () => top.invalidFields(),
    /** Show a 422's errors next to their fields; the ones no field takes
     * (an unknown field, say) are returned as [name, messages] pairs. */
    showServerErrors(errors) {
      const rest = [];
      for (const [key, messages] of Object.entries(errors || {})) {
        const field = top.children.get(key);
        if (!field) {
          rest.push([key, messages]);
          continue;
        }
        const own = [];
        const deeper = new Map();
        for (const message of Array.isArray(messages) ? messages : [String(messages)]) {
          // a deeper path leads the message: "y: Must be ...", "0.x: ..."
          const match = /^([^\s:]+): ([\s\S]*)$/.exec(message);
          const target = match ? field.find(match[1].split(".")) : null;
          if (target) deeper.set(target, [...(deeper.get(target) || []), match[2]]);
          else own.push(message);
        }
        if (own.length) field.showError(own);
        for (const [target, list] of deeper) target.showError(list);
      }
      return rest;
    },
  };
}
