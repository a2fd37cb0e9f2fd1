"""report.html: one self-contained page (inline CSS, plots as base64 PNG) that opens anywhere.

The page carries a few lines of inline script that, once everything has loaded, write on
`<body>` how many images there are and how many decoded to a non-zero size
(`data-images-total`, `data-images-loaded`): a headless browser's DOM dump then shows whether
every plot really rendered.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

from cnnzoo.profile.markdown import headers, method_lines, summary_table

if TYPE_CHECKING:
    from cnnzoo.profile.plots import Plot
    from cnnzoo.profile.report import Comparison

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 1100px; color: #222; padding: 0 1rem; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 1rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.6rem; }
th { background: #f3f3f3; text-align: right; }
td { text-align: right; font-variant-numeric: tabular-nums; }
td:first-child, th:first-child { text-align: left; }
figure { margin: 2rem 0; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9rem; }
code { background: #f6f6f6; padding: 0 0.2rem; }
"""

_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = document.images, ok = 0;
  for (var i = 0; i < imgs.length; i++) {
    if (imgs[i].complete && imgs[i].naturalWidth > 0 && imgs[i].naturalHeight > 0) ok++;
  }
  document.body.setAttribute("data-images-total", String(imgs.length));
  document.body.setAttribute("data-images-loaded", String(ok));
});
"""


def _plain(markdown: str) -> str:
    """Markdown's code and emphasis marks dropped: the method lines are shared with report.md."""
    return markdown.replace("`", "").replace("*", "")


def render_html(comparison: Comparison, plots: list[Plot], folder: Path) -> str:
    """The page; `folder` holds `plots/<file>` for each plot, embedded as data URIs."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers(comparison))
    body_rows = "\n".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
        for row in summary_table(comparison)
    )
    method = "\n".join(f"<li>{escape(_plain(line[2:]))}</li>" for line in method_lines(comparison))
    figures = []
    for p in plots:
        data = base64.b64encode((folder / "plots" / p.file).read_bytes()).decode("ascii")
        figures.append(
            f'<figure id="{escape(p.file[:-4])}"><h3>{escape(p.title)}</h3>'
            f'<img alt="{escape(p.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{escape(p.caption)}</figcaption></figure>"
        )
    measured = ""
    if comparison.measured:
        items = "".join(
            f"<li>{escape(m.model)}: {100 * m.top1:.2f}% top-1 on {escape(m.data)} "
            f"(run {escape(m.run)}, {m.epochs} epochs)</li>"
            for m in comparison.measured.values()
        )
        measured = f"<h2>Measured accuracy (your runs)</h2><ul>{items}</ul>"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>cnnzoo compare: memory and compute efficiency</title>
<style>{_STYLE}</style>
<script>{_CHECK_SCRIPT}</script>
</head>
<body>
<h1>cnnzoo compare: memory and compute efficiency</h1>
<p>After Canziani, Paszke and Culurciello, <em>An Analysis of Deep Neural Network Models for
Practical Applications</em> (2016, arXiv:1605.07678), measured on this machine.</p>
<table id="results">
<thead><tr>{head}</tr></thead>
<tbody>
{body_rows}
</tbody>
</table>
{measured}
<h2>Method</h2>
<ul>
{method}
</ul>
<h2>Plots</h2>
{"".join(figures)}
</body>
</html>
"""
