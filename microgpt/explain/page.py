"""The page around the sections: one HTML file with its style, its data and its script inline.

Nothing is fetched: no font, no image, no script from elsewhere. The figures the
sections draw are also embedded as JSON (``<script type="application/json" id="data">``,
floats written exactly) so that they can be read back out of the page.
"""
import json

from .svg import esc

STYLE = """
:root { --bg:#fdfdfc; --fg:#1f2328; --muted:#b9bec6; --line:#d0d7de; --soft:#59636e; --tipbg:#1f2328; --tipfg:#fff;
        --raw:#74a9e0; --smooth:#0b5cad; --val:#d9480f; --p0:#4c6ef5; --p1:#f59f00; --p2:#37b24d; --dot:#e7ebf0; }
@media (prefers-color-scheme: dark) {
  :root { --bg:#15181c; --fg:#e6e8eb; --muted:#4a525c; --line:#3a414a; --soft:#a3abb5; --tipbg:#e6e8eb; --tipfg:#15181c;
          --raw:#3d6b99; --smooth:#8cc4ff; --val:#ff9157; --p0:#748ffc; --p1:#fcc419; --p2:#69db7c; --dot:#2a3038; }
}
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--fg); font:15px/1.5 system-ui, sans-serif; }
main { max-width:1180px; margin:0 auto; padding:16px 24px 48px; }
h1 { font-size:24px; margin:8px 0 4px; } h2 { font-size:19px; margin:0 0 4px; }
section { border-top:1px solid var(--line); padding:18px 0 8px; }
.intro, .note { color:var(--soft); max-width:900px; margin:4px 0 10px; }
.mono, code { font-family: ui-monospace, monospace; }
table { border-collapse:collapse; margin:6px 0 12px; }
th, td { text-align:left; padding:2px 12px 2px 0; font-weight:normal; }
th { color:var(--soft); } table.mats th { font-weight:600; }
svg { display:block; max-width:100%; height:auto; overflow:visible; }
svg text { fill:var(--fg); font-size:12px; } text.small { font-size:10px; } text.strong { font-weight:600; }
text.mono { font-family: ui-monospace, monospace; }
.frame { fill:none; stroke:var(--line); } .grid { stroke:var(--line); stroke-dasharray:2 3; }
polyline { fill:none; stroke-width:1.5; } polyline.raw, line.raw { stroke:var(--raw); stroke-width:1; }
polyline.smooth, line.smooth { stroke:var(--smooth); stroke-width:2; } polyline.val, line.val { stroke:var(--val); }
circle.val { fill:var(--val); } .col { fill:var(--fg); fill-opacity:0; } .col:hover { fill-opacity:.12; }
.track { fill:var(--dot); } .dot { fill:var(--dot); stroke:var(--line); } .empty { fill:var(--dot); opacity:.4; }
.part0 { fill:var(--p0); } .part1 { fill:var(--p1); } .part2 { fill:var(--p2); }
[data-tip]:hover > rect:last-of-type, rect[data-tip]:hover { stroke:var(--fg); stroke-width:1; }
.maps { margin-bottom:12px; }
.positions, .maps, .row { display:flex; flex-wrap:wrap; gap:14px 18px; align-items:flex-start; }
.names { columns:3 220px; font-size:18px; } .names li { margin:2px 0; }
.ch { display:inline-block; min-width:1.1em; text-align:center; margin-right:1px; border-radius:3px;
      color:#111; font-family: ui-monospace, monospace; padding:0 2px; }
.ch.end { font-size:11px; vertical-align:middle; }
.share { display:inline-block; height:10px; background:var(--p0); vertical-align:middle; }
#tip { position:fixed; pointer-events:none; background:var(--tipbg); color:var(--tipfg); padding:3px 8px;
       border-radius:4px; font-size:13px; max-width:420px; z-index:9; }
"""

# Hovering: one tooltip for every element with data-tip. Then a mark that the script ran.
SCRIPT = """
(function () {
  var tip = document.getElementById("tip");
  document.addEventListener("mouseover", function (e) {
    var el = e.target.closest ? e.target.closest("[data-tip]") : null;
    if (!el) { tip.hidden = true; return; }
    tip.textContent = el.getAttribute("data-tip");
    tip.hidden = false;
  });
  document.addEventListener("mousemove", function (e) {
    var x = e.clientX + 14, w = tip.offsetWidth;
    if (x + w > window.innerWidth) { x = e.clientX - w - 10; }
    tip.style.left = x + "px";
    tip.style.top = (e.clientY + 16) + "px";
  });
  document.documentElement.setAttribute("data-explain", "ready");
})();
"""


def page(title, subtitle, sections, data):
    """The whole HTML document: title, sections (HTML strings) and the data (JSON-able)."""
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")  # no early </script>
    return ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            '<meta name=viewport content="width=device-width, initial-scale=1">'
            '<meta name=color-scheme content="light dark">'
            f"<title>{esc(title)}</title><style>{STYLE}</style></head><body><main>"
            f"<h1>{esc(title)}</h1><p class=intro>{subtitle}</p>{''.join(sections)}</main>"
            '<div id="tip" hidden></div>'
            f'<script type="application/json" id="data">{blob}</script>'
            f"<script>{SCRIPT}</script></body></html>\n")
