// Starts Swagger UI on the docs page (flask_spacewalk/web/docs.py). A file, not
// an inline script, so that the page's Content-Security-Policy can refuse
// every inline script.
//
// OpenAPI descriptions are Markdown, which may hold HTML; ours are plain
// text (job classes' DESCRIPTION, field descriptions), so "<", ">" and "&"
// in them are written as character references before Swagger UI renders
// the document: they show as the characters, never as markup. The document
// itself (openapi.json) keeps them as they are.
(function () {
  "use strict";

  const config = JSON.parse(document.getElementById("swagger-ui-config").textContent);
  const specUrl = new URL(config.url, document.baseURI).href;

  const escape = (text) =>
    text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

  // Values, not documentation: shown as code, left as they are.
  const DATA = new Set(["default", "example", "examples", "enum", "const"]);
  // Maps whose keys are names (a Params field may be called "default").
  const NAMES = new Set(["properties", "patternProperties", "definitions", "$defs", "schemas"]);

  function asText(value, named = false) {
    if (Array.isArray(value)) return value.map((item) => asText(item));
    if (value === null || typeof value !== "object") return value;
    const copy = {};
    for (const [key, item] of Object.entries(value)) {
      if (named) copy[key] = asText(item);
      else if (key === "description" && typeof item === "string") copy[key] = escape(item);
      else copy[key] = DATA.has(key) ? item : asText(item, NAMES.has(key));
    }
    return copy;
  }

  window.ui = SwaggerUIBundle({
    ...config,
    responseInterceptor(response) {
      // Only the document: answers of "Try it out" are shown as code.
      if (response.url === specUrl && response.ok && typeof response.text === "string") {
        try {
          response.text = JSON.stringify(asText(JSON.parse(response.text)));
        } catch (error) {
          // not JSON: Swagger UI reports it as it would have
        }
      }
      return response;
    },
  });
})();
