// Renders the app's OpenAPI and AsyncAPI documents with plain DOM calls (no innerHTML,
// no eval, no inline script): what the default Content-Security-Policy allows.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function refName(ref) {
  return ref.slice(ref.lastIndexOf("/") + 1);
}

function describe(schema) {
  if (!schema || Object.keys(schema).length === 0) return el("code", {}, "any");
  if (schema.$ref) return el("a", { href: "#schema-" + refName(schema.$ref) }, refName(schema.$ref));
  const options = schema.oneOf || schema.anyOf;
  if (options) {
    const out = el("span");
    options.forEach((option, i) => { if (i) out.append(" | "); out.append(describe(option)); });
    return out;
  }
  const out = el("span");
  if (schema.type === "array") {
    out.append("array of ", describe(schema.items));
  } else if (schema.enum) {
    out.append(el("code", {}, schema.enum.map((v) => JSON.stringify(v)).join(" | ")));
  } else {
    out.append(el("code", {}, String(schema.type || "any") + (schema.format ? " (" + schema.format + ")" : "")));
  }
  const limits = [];
  const words = { minimum: ">=", maximum: "<=", exclusiveMinimum: ">", exclusiveMaximum: "<",
    minLength: "min length", maxLength: "max length", pattern: "pattern", multipleOf: "multiple of" };
  for (const [key, word] of Object.entries(words)) {
    if (schema[key] !== undefined) limits.push(word + " " + schema[key]);
  }
  if (schema.default !== undefined) limits.push("default " + JSON.stringify(schema.default));
  if (limits.length) out.append(" " + limits.join(", "));
  return out;
}

function pre(value) {
  return el("pre", {}, el("code", {}, JSON.stringify(value, null, 2)));
}

function operationBox(kind, label, summary, body) {
  const box = el("details", { class: "operation", "data-testid": "operation" },
    el("summary", {}, el("span", { class: "method " + kind }, kind), label,
      summary ? el("span", { class: "summary" }, summary) : null),
    body);
  return box;
}

function renderHttp(doc, section) {
  const paths = doc.paths || {};
  for (const [path, methods] of Object.entries(paths)) {
    for (const [method, op] of Object.entries(methods)) {
      const body = el("div");
      if (op.description) body.append(el("p", {}, op.description));
      body.append(el("p", { class: "note" }, "operationId: ", el("code", {}, op.operationId || "")));
      if (op.parameters && op.parameters.length) {
        const table = el("table", {}, el("tr", {}, el("th", {}, "name"), el("th", {}, "in"),
          el("th", {}, "required"), el("th", {}, "type")));
        for (const p of op.parameters) {
          table.append(el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in),
            el("td", {}, p.required ? "yes" : "no"), el("td", {}, describe(p.schema))));
        }
        body.append(el("h4", {}, "Parameters"), table);
      }
      if (op.requestBody) {
        body.append(el("h4", {}, "Body" + (op.requestBody.required ? "" : " (optional)")));
        for (const [media, content] of Object.entries(op.requestBody.content || {})) {
          body.append(el("p", {}, el("code", {}, media), ": ", describe(content.schema)));
        }
      }
      body.append(el("h4", {}, "Responses"));
      const table = el("table");
      for (const [status, answer] of Object.entries(op.responses || {})) {
        const content = answer.content && answer.content["application/json"];
        table.append(el("tr", {}, el("td", {}, el("code", {}, status)), el("td", {}, answer.description || ""),
          el("td", {}, content ? describe(content.schema) : "")));
      }
      body.append(table);
      section.append(operationBox(method, path, op.summary, body));
    }
  }
  if (!Object.keys(paths).length) section.append(el("p", { class: "note" }, "No HTTP routes."));
}

function renderAsync(doc, section) {
  const channels = doc.channels || {};
  const operations = Object.values(doc.operations || {});
  const messages = (doc.components && doc.components.messages) || {};
  for (const [id, channel] of Object.entries(channels)) {
    const body = el("div");
    if (channel.description) body.append(el("p", {}, channel.description));
    for (const name of Object.keys(channel.parameters || {})) {
      body.append(el("p", { class: "note" }, "path parameter ", el("code", {}, name)));
    }
    for (const op of operations) {
      if (op.channel.$ref !== "#/channels/" + id) continue;
      body.append(el("h4", {}, op.action === "receive" ? "The app receives" : "The app sends"));
      const table = el("table");
      for (const ref of op.messages || []) {
        const name = refName(ref.$ref);
        const message = messages[name] || {};
        table.append(el("tr", {}, el("td", {}, el("code", {}, name)), el("td", {}, describe(message.payload))));
      }
      body.append(table);
    }
    section.append(operationBox("ws", channel.address, channel.description ? "" : id, body));
  }
  if (!Object.keys(channels).length) section.append(el("p", { class: "note" }, "No WebSocket routes."));
}

function renderSchemas(schemas, section) {
  for (const [name, schema] of Object.entries(schemas).sort()) {
    section.append(el("div", { id: "schema-" + name }, el("h3", {}, name), pre(schema)));
  }
}

async function load(url) {
  const response = await fetch(url, { headers: { accept: "application/json" } });
  if (!response.ok) throw new Error(url + " answered " + response.status);
  return response.json();
}

async function main() {
  const schemas = {};
  const parts = [
    ["openapi", "http", renderHttp],
    ["asyncapi", "websocket", renderAsync],
  ];
  for (const [attribute, id, render] of parts) {
    const section = document.getElementById(id);
    const status = section.querySelector(".note");
    const url = document.body.dataset[attribute];
    if (!url) { status.textContent = "Turned off."; continue; }
    try {
      const doc = await load(url);
      status.textContent = "";
      status.append((doc.info && doc.info.title) || "", " ", el("a", { href: url }, url));
      render(doc, section);
      Object.assign(schemas, (doc.components && doc.components.schemas) || {});
    } catch (error) {
      status.className = "error";
      status.textContent = "Could not load " + url + ": " + error.message;
    }
  }
  renderSchemas(schemas, document.getElementById("schemas"));
  document.body.dataset.ready = "yes";
}

document.addEventListener("DOMContentLoaded", main);
