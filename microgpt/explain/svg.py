"""Inline SVG drawing, by hand: a line chart, bar rows, heat maps and a scatter plot.

Every function returns an <svg> element as a string. Colours that carry data are
written here (a hue, or an opacity over the page's background, which reads in the
light and the dark theme alike); text and axes take the page's CSS classes. An
element with ``data-tip`` shows that text on hover (the page's script).
"""
import math
from html import escape


def esc(text):
    return escape(str(text), quote=True)


def fmt(x, digits=4):
    return f"{x:.{digits}g}"


def confidence_colour(p):
    """A probability as a hue: red (0) through amber to green (1)."""
    return f"hsl({round(120 * max(0.0, min(1.0, p)))},75%,45%)"


def signed_fill(v, vmax):
    """A signed number as a fill: orange above 0, blue below, opacity by size."""
    a = min(1.0, abs(v) / vmax) if vmax > 0 else 0.0
    return f'fill="{"#e8590c" if v >= 0 else "#1c7ed6"}" fill-opacity="{a:.3f}"'


def svg(width, height, body, label):
    return (f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{esc(label)}">{body}</svg>')


def text(x, y, content, cls="lbl", anchor="start", extra=""):
    return f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" text-anchor="{anchor}"{extra}>{esc(content)}</text>'


def ticks(lo, hi, n=5):
    """About n round numbers spanning lo..hi."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = -(-lo // step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def polyline(points, cls):
    return f'<polyline class="{cls}" points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in points)}"/>'


def line_chart(series, hover, *, width=900, height=300, xlabel="step", ylabel="loss"):
    """series: [(css class, [(x, y)], legend text, dots?)]; hover: [(x0, x1, tip)] columns.
    Axes span every series; the hover columns cover the x ranges given."""
    left, right, top, bottom = 52, 16, 12, 40
    xs = [x for _, pts, _, _ in series for x, _ in pts]
    ys = [y for _, pts, _, _ in series for _, y in pts]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.05 or 0.5
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = width - left - right, height - top - bottom

    def px(x):
        return left + (x - x0) / (x1 - x0) * pw

    def py(y):
        return top + (y1 - y) / (y1 - y0) * ph
    out = [f'<rect class="frame" x="{left}" y="{top}" width="{pw}" height="{ph}"/>']
    for t in ticks(y0, y1):
        out.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}"/>')
        out.append(text(left - 6, py(t) + 4, fmt(t, 3), anchor="end"))
    for t in ticks(x0, x1, 8):
        out.append(text(px(t), top + ph + 16, fmt(t, 6), anchor="middle"))
    out.append(text(left + pw / 2, height - 4, xlabel, anchor="middle"))
    out.append(text(12, top + ph / 2, ylabel, anchor="middle", extra=f' transform="rotate(-90 12 {top + ph / 2:.1f})"'))
    for cls, pts, legend, dots in series:
        out.append(polyline([(px(x), py(y)) for x, y in pts], cls))
        if dots:
            out += [f'<circle class="{cls}" cx="{px(x):.1f}" cy="{py(y):.1f}" r="3"/>' for x, y in pts]
    for i, (cls, _, legend, _) in enumerate(series):
        ly = top + 14 + 16 * i
        out.append(f'<line class="{cls}" x1="{left + pw - 200}" x2="{left + pw - 180}" y1="{ly - 4}" y2="{ly - 4}"/>')
        out.append(text(left + pw - 174, ly, legend))
    for a, b, tip in hover:
        xa, xb = px(a), px(b)
        out.append(f'<rect class="col" x="{xa:.1f}" y="{top}" width="{max(xb - xa, 1):.1f}" height="{ph}" '
                   f'data-tip="{esc(tip)}"/>')
    return svg(width, height, "".join(out), f"{ylabel} by {xlabel}")


def bar_rows(rows, *, width=160, row_h=16, label_w=32, title=None):
    """Horizontal bars, one per row: (label, value in 0..1, fill, tip). A title on top."""
    top = 18 if title else 2
    out = [text(2, 13, title, cls="lbl strong")] if title else []
    bw = width - label_w - 40
    for i, (lab, v, fill, tip) in enumerate(rows):
        y = top + i * row_h
        out.append(f'<g data-tip="{esc(tip)}">{text(2, y + 12, lab, cls="lbl mono")}'
                   f'<rect class="track" x="{label_w}" y="{y + 2}" width="{bw}" height="{row_h - 4}"/>'
                   f'<rect x="{label_w}" y="{y + 2}" width="{bw * v:.1f}" height="{row_h - 4}" fill="{fill}"/>'
                   f'{text(label_w + bw + 4, y + 12, f"{v:.2f}")}</g>')
    return svg(width, top + len(rows) * row_h + 2, "".join(out), title or "bars")


def heatmap(cells, row_labels, col_labels, *, cell=14, fill, tip, title=""):
    """cells: rows of numbers; fill(v) -> SVG fill attributes; tip(i, j, v) -> hover text."""
    left = 8 + 8 * max((len(str(r)) for r in row_labels), default=1)
    top = 16 + (8 * max((len(str(c)) for c in col_labels), default=1) if col_labels else 0)
    out = [text(2, 12, title, cls="lbl strong")] if title else []
    for j, c in enumerate(col_labels):
        cx = left + j * cell + cell / 2 + 4
        out.append(text(cx, top - 4, c, cls="lbl mono small", extra=f' transform="rotate(-90 {cx:.1f} {top - 4})"'))
    for i, row in enumerate(cells):
        y = top + i * cell
        out.append(text(left - 4, y + cell - 3, row_labels[i], cls="lbl mono", anchor="end"))
        for j, v in enumerate(row):
            out.append(f'<rect x="{left + j * cell}" y="{y}" width="{cell - 1}" height="{cell - 1}" '
                       f'{fill(v)} data-tip="{esc(tip(i, j, v))}"/>')
    ncol = max((len(r) for r in cells), default=0)
    return svg(left + ncol * cell + 4, top + len(cells) * cell + 4, "".join(out), title or "heat map")


def scatter(points, labels, tips, *, size=320, title=""):
    """Labelled points (x, y), scaled to fit a square with equal axes."""
    pad = 24
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    span = max(max(xs) - min(xs), max(ys) - min(ys)) or 1.0
    cx, cy = (max(xs) + min(xs)) / 2, (max(ys) + min(ys)) / 2
    scale = (size - 2 * pad) / span
    out = [f'<rect class="frame" x="1" y="1" width="{size - 2}" height="{size - 2}"/>']
    if title:
        out.append(text(6, 14, title, cls="lbl strong"))
    for (x, y), lab, tip in zip(points, labels, tips):
        sx, sy = size / 2 + (x - cx) * scale, size / 2 - (y - cy) * scale
        out.append(f'<g data-tip="{esc(tip)}"><circle class="dot" cx="{sx:.1f}" cy="{sy:.1f}" r="9"/>'
                   f'{text(sx, sy + 4, lab, cls="lbl mono", anchor="middle")}</g>')
    return svg(size, size, "".join(out), title or "scatter")


def stacked_bars(rows, parts, *, width=900, row_h=26, label_w=150, unit=""):
    """One horizontal bar per row, split into parts: rows = [(label, [value per part], tip per part)];
    parts = [(name, css class)]. Bars share one scale; a legend sits below."""
    vmax = max((sum(vals) for _, vals, _ in rows), default=1) or 1
    bw = width - label_w - 90
    out = []
    for i, (lab, vals, tips) in enumerate(rows):
        y, x = 4 + i * row_h, label_w
        out.append(text(label_w - 6, y + row_h / 2 + 4, lab, anchor="end"))
        for (name, cls), v, tip in zip(parts, vals, tips):
            w = bw * v / vmax
            out.append(f'<rect class="{cls}" x="{x:.1f}" y="{y + 3}" width="{max(w, 0.5):.1f}" '
                       f'height="{row_h - 6}" data-tip="{esc(tip)}"/>')
            x += w
        total = sum(vals)
        shown = f"{total:,.0f}" if unit == "" or total >= 100 else f"{total:.3g}"
        out.append(text(x + 6, y + row_h / 2 + 4, shown + unit))
    ly = 4 + len(rows) * row_h + (14 if len(parts) > 1 else -8)
    for k, (name, cls) in enumerate(parts if len(parts) > 1 else []):
        out.append(f'<rect class="{cls}" x="{label_w + 140 * k}" y="{ly - 10}" width="12" height="12"/>')
        out.append(text(label_w + 140 * k + 16, ly, name))
    return svg(width, ly + 8, "".join(out), "stacked bars")
