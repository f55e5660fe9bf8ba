"""GET /docs: the API's documentation as one HTML page made from /openapi.json on the server.

Swagger UI (FastAPI's default /docs) loads its JavaScript and CSS from a CDN: offline, or behind
a firewall, it is a blank page. This page needs nothing else: no script, no stylesheet, no font
to fetch. Each route with its summary, parameters, request body and answers, then each schema of
the components, as the OpenAPI (Swagger) schema states them; "try it out" is a curl line."""

from __future__ import annotations

import json
from html import escape
from typing import Any

_STYLE = """body{font-family:sans-serif;max-width:70em;margin:1em auto;padding:0 1em;color:#222}
h2{border-bottom:1px solid #ccc;margin-top:2em}.route{margin:1.2em 0;padding:.5em 1em;
border-left:4px solid #49c;background:#f7f9fb}.method{font-weight:bold;text-transform:uppercase;
display:inline-block;min-width:4.5em}code,pre{background:#eef;padding:.1em .3em}
pre{padding:.5em;overflow-x:auto;max-height:30em}"""
_SHOWN = 20_000  # characters of a schema shown in full (a wide model's schemas are long)


def docs_page(schema: dict) -> bytes:
    """The page of an OpenAPI schema, UTF-8."""
    info = schema.get("info", {})
    title = escape(f"{info.get('title', 'API')} {info.get('version', '')}".strip())
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}"
             f"</title><style>{_STYLE}</style></head><body><h1>{title}</h1>",
             f"<p>{escape(info.get('description', ''))}</p>",
             "<p>The OpenAPI (Swagger) schema of this page: <a href=\"/openapi.json\">"
             "/openapi.json</a>.</p><h2 id=\"routes\">Routes</h2>"]
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            parts.append(_route(path, method, operation))
    parts.append("<h2 id=\"schemas\">Schemas</h2>")
    for name, component in schema.get("components", {}).get("schemas", {}).items():
        parts.append(f"<h3 id=\"{escape(name)}\">{escape(name)}</h3>{_json(component)}")
    parts.append("</body></html>")
    return "".join(parts).encode("utf-8")


def _route(path: str, method: str, operation: dict) -> str:
    html = [f"<div class=\"route\"><p><span class=\"method\">{escape(method)}</span> "
            f"<code>{escape(path)}</code> {escape(operation.get('summary', ''))}</p>"]
    parameters = operation.get("parameters", [])
    if parameters:
        html.append("<p>Parameters: " + ", ".join(
            f"<code>{escape(p['name'])}</code> ({escape(p.get('in', ''))}"
            f"{', required' if p.get('required') else ''}) "
            f"{escape(p.get('description') or p.get('schema', {}).get('description', ''))}"
            for p in parameters) + "</p>")
    for kind, content in operation.get("requestBody", {}).get("content", {}).items():
        html.append(f"<p>Body ({escape(kind)}): {_ref(content.get('schema', {}))}</p>")
    answers = ", ".join(f"{escape(code)} {_ref(_schema_of(answer))}"
                        for code, answer in operation.get("responses", {}).items())
    if answers:
        html.append(f"<p>Answers: {answers}</p>")
    body = "-H 'Content-Type: application/json' -d @body.json " if method == "post" else ""
    html.append(f"<pre>curl -X {escape(method.upper())} {body}http://HOST:PORT"
                f"{escape(path)}</pre></div>")
    return "".join(html)


def _schema_of(answer: dict) -> dict:
    for content in answer.get("content", {}).values():
        return content.get("schema", {})
    return {}


def _ref(schema: dict) -> str:
    """A link to the component a schema names, or the schema itself."""
    ref = schema.get("$ref", "")
    if ref:
        name = escape(ref.rpartition("/")[2])
        return f"<a href=\"#{name}\">{name}</a>"
    return f"<code>{escape(json.dumps(schema)[:200])}</code>" if schema else ""


def _json(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False)
    if len(text) > _SHOWN:
        text = text[:_SHOWN] + f"\n... ({len(text) - _SHOWN} more characters: see /openapi.json)"
    return f"<pre>{escape(text)}</pre>"
