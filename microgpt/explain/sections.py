"""The page's five sections as HTML, from the figures numbers.py and inputs.py gathered."""
from ..plot import moving_average
from .numbers import label
from .svg import (bar_rows, confidence_colour, esc, fmt, heatmap, line_chart, scatter, signed_fill,
                  stacked_bars)

TOP_K = 5         # next characters shown per position
MAX_COLUMNS = 400  # hover columns on the loss chart (steps are grouped beyond this)
MAX_POINTS = 1500  # points of the raw loss line (each group keeps its lowest and highest)


def section(key, title, intro, body):
    return (f'<section id="{key}" data-section="{key}"><h2>{esc(title)}</h2>'
            f'<p class="intro">{intro}</p>{body}</section>')


def facts_table(rows):
    return "<table class=facts>" + "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>"


def thinned(points, limit):
    """At most about limit points: each group of consecutive points keeps its extremes."""
    if len(points) <= limit:
        return points
    size = -(-len(points) // (limit // 2))
    out = []
    for i in range(0, len(points), size):
        group = points[i:i + size]
        out += sorted({min(group, key=lambda p: p[1]), max(group, key=lambda p: p[1])})
    return out


def training(log, facts, log_path):
    table = facts_table(facts)
    if log is None:
        chart = ('<p class="note">No training log given: <code>microgpt train --log FILE</code> writes one; '
                 'pass it with <code>--log FILE</code> to see the loss curve here.</p>')
        return section("training", "1. Training", "What this run is.", table + chart)
    steps, losses, lrs = log["steps"], log["loss"], log["lr"]
    window = max(1, len(losses) // 50)
    smooth = moving_average(losses, window)
    series = [("raw", thinned(list(zip(steps, losses)), MAX_POINTS), "training loss", False)]
    if window > 1:
        series.append(("smooth", list(zip(steps, smooth)), f"mean of {window} steps", False))
    if log["val"]:
        series.append(("val", log["val"], "validation loss", True))
    group = -(-len(steps) // MAX_COLUMNS)
    val = dict(log["val"])
    hover = []
    for i in range(0, len(steps), group):
        j = min(i + group, len(steps)) - 1
        tip = (f"step {steps[i]}" + (f"–{steps[j]}" if j > i else "") +
               f" · loss {fmt(losses[i])} (smoothed {fmt(smooth[i])}) · lr {fmt(lrs[i])}")
        tip += "".join(f" · validation loss {fmt(val[s])} at step {s}" for s in steps[i:j + 1] if s in val)
        hover.append((steps[i] - 0.5, steps[j] + 0.5, tip))
    chart = line_chart(series, hover)
    intro = (f"The loss of each step's document, from the log <code>{esc(log_path)}</code>, with its running "
             "mean; hover for the step and its learning rate.")
    return section("training", "1. Training", intro, table + f'<div class="chart">{chart}</div>')


def walkthrough(trace, names, tokenizer, temperature, from_prompt):
    chars = [label(c) for c in tokenizer.chars] + ["end"]
    tokens = trace["tokens"]
    cols = []
    for pos, probs in enumerate(trace["probs"]):
        shown = "BOS" if tokens[pos] == tokenizer.bos else label(tokenizer.chars[tokens[pos]])
        chosen = tokens[pos + 1]
        top = sorted(range(len(probs)), key=lambda t: -probs[t])[:TOP_K]
        if chosen not in top:
            top.append(chosen)
        rows = [(chars[t], probs[t], confidence_colour(probs[t]) if t == chosen else "var(--muted)",
                 f"after {shown!s} at position {pos}: {chars[t]!r} with probability {probs[t]:.6f}"
                 + (" (the next character)" if t == chosen else "")) for t in top]
        cols.append(f'<div class="pos">{bar_rows(rows, title=f"{pos}: {shown} →")}</div>')
    name = "".join(label(tokenizer.chars[t]) for t in tokens[1:] if t != tokenizer.bos)
    samples = "".join(f'<li>{coloured(n, ps, temperature)}</li>' for n, ps in names)
    origin = "the prompt" if from_prompt else "the first sampled name"
    intro = (f"The name <b class=mono>{esc(name)}</b> ({origin}) read one position at a time: at each "
             f"position the model's {TOP_K} most likely next characters (softmax of the logits), the actual "
             "next one coloured by its probability, red (unlikely) to green (likely).")
    legend = ('<p class="note">Sampled names at temperature ' + esc(fmt(temperature)) + ', each character '
              'coloured by the probability it was drawn with (the last mark is the end of the name, drawn too):</p>')
    body = f'<div class="positions">{"".join(cols)}</div>{legend}<ol class="names">{samples}</ol>'
    return section("name", "2. A name, position by position", intro, body)


def coloured(name, probs, temperature):
    spans = []
    for ch, p in zip(list(name) + [None], probs):
        shown = "end" if ch is None else label(ch)
        spans.append(f'<span class="ch{" end" if ch is None else ""}" style="background:{confidence_colour(p)}" '
                     f'data-tip="{esc(shown)}: probability {p:.4f} at temperature {fmt(temperature)}">'
                     f'{esc(shown)}</span>')
    return "".join(spans)


def attention(trace, tokenizer, config):
    tokens = trace["tokens"][:-1]
    labels = [f"{i}:{'BOS' if t == tokenizer.bos else label(tokenizer.chars[t])}" for i, t in enumerate(tokens)]
    layers = []
    for li in range(config.n_layer):
        maps = []
        for h in range(config.n_head):
            rows = trace["attention"][f"layer{li}.head{h}"]
            cells = [row + [None] * (len(rows) - len(row)) for row in rows]
            maps.append(heatmap(
                cells, labels, labels, cell=18, title=f"layer {li}, head {h}",
                fill=lambda v: 'class="empty"' if v is None else f'fill="#7048e8" fill-opacity="{v:.3f}"',
                tip=lambda i, j, v: (f"{labels[i]} attends to {labels[j]}: weight {v:.6f}" if v is not None
                                     else "a later position: not seen")))
        layers.append('<div class="maps">' + "".join(f'<div class="map">{m}</div>' for m in maps) + "</div>")
    intro = ("Each head's attention weights for that name: row <i>t</i> is the softmax over positions 0..<i>t</i> "
             "that position <i>t</i> uses to mix the values; darker is more weight, hover for the number.")
    return section("attention", "3. Attention", intro, "".join(layers))


def embeddings(wte, pca, share, tokenizer, mats, total):
    labels = [label(c) for c in tokenizer.chars] + ["BOS"]
    vmax = max(abs(v) for row in wte for v in row)
    heat = heatmap(wte, labels, [str(j) for j in range(len(wte[0]))], cell=14, title="wte: one row per token",
                   fill=lambda v: signed_fill(v, vmax),
                   tip=lambda i, j, v: f"wte[{labels[i]!r}][{j}] = {v:.6f}")
    dots = scatter(pca, labels, [f"{lab}: ({x:.3f}, {y:.3f})" for lab, (x, y) in zip(labels, pca)],
                   title=f"PCA of wte: {share[0]:.0%} and {share[1]:.0%} of the variance")
    rows = "".join(f'<tr><td class=mono>{esc(n)}</td><td>{r} × {c}</td><td>{r * c:,}</td>'
                   f'<td><span class="share" style="width:{s * 200:.1f}px"></span> {s:.1%}</td></tr>'
                   for n, r, c, s in mats)
    table = (f'<table class="mats"><tr><th>matrix</th><th>shape</th><th>parameters</th><th>share</th></tr>{rows}'
             f'<tr><th>all</th><td></td><th>{total:,}</th><td></td></tr></table>')
    intro = ("The token embedding (orange above 0, blue below; hover for the number), its two main directions "
             "(characters the model treats alike sit together), and where the parameters are.")
    body = f'<div class="row"><div>{heat}</div><div>{dots}</div></div>{table}'
    return section("embeddings", "4. Embeddings and weights", intro, body)


STAGE_NAMES = {"embeddings": "embeddings", "lm_head": "lm_head", "softmax and loss": "softmax and loss"}


def stage_name(stage):
    if stage in STAGE_NAMES:
        return STAGE_NAMES[stage]
    layer, part = stage.split(".")
    return f"layer {layer[5:]} {'attention' if part == 'attention' else 'MLP'}"


def computation(steps, params, bench):
    rows = [(stage_name(s), [n], [f"{stage_name(s)}: {n:,} nodes, {e:,} edges"]) for s, n, e in steps["stages"]]
    nodes_chart = stacked_bars(rows, [("nodes", "part0")])
    reach_nodes, reach_edges = steps["reachable"]
    per_pos = steps["nodes"] / steps["positions"]
    text = (f"<p>One training step on a document of {steps['positions']} positions builds "
            f"<b>{steps['nodes']:,}</b> scalar nodes ({per_pos:,.0f} per position) joined by {steps['edges']:,} "
            f"edges, over the model's {params:,} parameters. Backward adds no node: it sorts the "
            f"{reach_nodes:,} nodes the loss depends on (parameters included) and does one multiply-add per edge "
            f"({reach_edges:,}). On the pure engine, where every node is a Python object, that step took "
            f"{steps['forward_s'] * 1000:,.0f} ms forward and {steps['backward_s'] * 1000:,.0f} ms backward here. "
            "The compiled engine keeps the same nodes in flat C arrays; the replay engine records the graph once "
            "and reruns it in C, building no nodes at all.</p>")
    body = text + f'<div class="chart">{nodes_chart}</div>'
    if bench is not None:
        cfg, engines, same = bench
        parts = [("forward", "part0"), ("backward", "part1"), ("optimizer", "part2")]
        pure = next((e["step_ms"] for e in engines if e["engine"] == "pure"), None)

        def name(e):
            faster = pure / e["step_ms"] if pure and e["step_ms"] > 0 and e["engine"] != "pure" else None
            return e["engine"] + (f" ({faster:,.0f}× pure)" if faster else "")
        bars = [(name(e), [e["ms"][p] for p, _ in parts],
                 [f"{e['engine']} {p}: {e['ms'][p]:.3f} ms (step median {e['step_ms']:.3f} ms)" for p, _ in parts])
                for e in engines]
        where = "this run's configuration" if same else \
            "n_layer {n_layer}, n_embd {n_embd}, block_size {block_size}, n_head {n_head} (not this run's)".format(**cfg)
        body += (f"<p>Time per step by engine, from the benchmark report (median ms, at {esc(where)}):</p>"
                 f'<div class="chart">{stacked_bars(bars, parts, unit=" ms")}</div>')
    intro = ("Counted by the engine itself while the model code builds one training step, stage by stage: "
             "why scalar autograd is slow, and what the engines do about it.")
    return section("computation", "5. The computation", intro, body)
