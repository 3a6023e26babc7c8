"""The report page: one self-contained HTML file (no scripts, no fonts, no CDN), figures and
thumbnails as relative files beside it, readable from disk and at phone width."""

from __future__ import annotations

import html
import time

from jinja2 import Environment

TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>petkit report</title>
<style>
  body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1180px;
         padding: 12px 16px 40px; color: #1d2329; background: #fff; line-height: 1.45; }
  h1 { font-size: 1.5rem; margin: 0.4em 0 0.2em; }
  h2 { font-size: 1.15rem; margin: 1.6em 0 0.5em; border-bottom: 1px solid #dde2e6; padding-bottom: 0.2em; }
  .meta { color: #56606a; font-size: 0.9rem; }
  .table-wrap { overflow-x: auto; }
  table { border-collapse: collapse; font-size: 0.88rem; min-width: 60%; }
  th, td { text-align: left; padding: 4px 10px; border-bottom: 1px solid #eef1f3; white-space: nowrap; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .figures { display: grid; grid-template-columns: repeat(auto-fit, minmax(min(100%, 460px), 1fr)); gap: 18px; }
  figure { margin: 0; border: 1px solid #e3e7ea; border-radius: 6px; padding: 8px; background: #fafbfc; }
  figure.wide { grid-column: 1 / -1; }
  figure img { width: 100%; height: auto; display: block; }
  figcaption { font-size: 0.86rem; color: #3c454d; margin-top: 6px; }
  figcaption a { color: #2a62a8; }
  ul.absent li { color: #6b4d00; }
</style>
</head>
<body>
<h1>petkit report</h1>
<p class="meta">petkit {{ version }} &middot; {{ written }}{% for what, value in sources %} &middot; {{ what }}: {{ value }}{% endfor %}</p>

{% if metrics %}
<h2>Metrics</h2>
<div class="table-wrap"><table>
<tr><th>metric</th><th>value</th><th>95 % interval</th><th>protocol</th></tr>
{% for m in metrics %}<tr><td>{{ m.name }}</td><td class="num">{{ m.value }}</td><td class="num">{{ m.ci95 }}</td><td>{{ m.protocol }}</td></tr>
{% endfor %}</table></div>
{% endif %}

{% if figures %}
<h2>Figures</h2>
<div class="figures">
{% for f in figures %}<figure class="{{ 'wide' if f.wide else '' }}" id="{{ f.key }}">
<img src="figures/{{ f.key }}.png" alt="{{ f.title }}" loading="lazy">
<figcaption><strong>{{ f.title }}.</strong> {{ f.caption }} <a href="figures/{{ f.key }}.json">data</a></figcaption>
</figure>
{% endfor %}</div>
{% endif %}

{% for title, header, rows in tables %}
<h2>{{ title }}</h2>
<div class="table-wrap"><table>
<tr>{% for h in header %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in rows %}<tr>{% for cell in row %}<td{% if not loop.first %} class="num"{% endif %}>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}</table></div>
{% endfor %}

{% if absent %}
<h2>Not in this report</h2>
<ul class="absent">
{% for what, why in absent %}<li><strong>{{ what }}</strong>: {{ why }}</li>
{% endfor %}</ul>
{% endif %}
</body>
</html>
"""

WIDE = ("training", "grid_worst", "grid_random")


def _number(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return html.escape(str(value))


def render(report, version: str) -> str:
    metrics = [{"name": m["name"], "value": _number(m["value"]),
                "ci95": f"{m['ci95'][0]:.4f} - {m['ci95'][1]:.4f}" if m.get("ci95") else "", "protocol": m.get("protocol", "")}
               for m in report.metrics]
    figures = [{"key": p.key, "title": p.title, "caption": p.caption, "wide": p.key in WIDE} for p in report.plots]
    environment = Environment(autoescape=True)
    return environment.from_string(TEMPLATE).render(
        version=version, written=time.strftime("%Y-%m-%d %H:%M"), sources=report.sources, metrics=metrics, figures=figures,
        tables=report.tables, absent=report.absent)
