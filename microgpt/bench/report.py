"""What `microgpt bench` prints: the machine it ran on, and the results as a table."""
import os
import platform



def config_label(cfg):
    return (f"n_layer {cfg['n_layer']}, n_embd {cfg['n_embd']}, block_size {cfg['block_size']}, "
            f"n_head {cfg['n_head']}")


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def machine_info():
    u = platform.uname()
    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "machine": u.machine,
            "system": f"{u.system} {u.release}", "processor": platform.processor()}


def python_info():
    return {"implementation": platform.python_implementation(), "version": platform.python_version()}


def _mib(n):
    return "-" if n is None else f"{n / 2 ** 20:.1f}"


def _ms(x):
    if x is None:
        return "-"
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _count(x):
    return "-" if x is None else f"{x:.0f}"


LEFT_ALIGNED = ("engine", "losses")


def format_table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = []
    for i, row in enumerate([header] + rows):
        cells = [str(x).ljust(w) if header[j] in LEFT_ALIGNED else str(x).rjust(w)
                 for j, (x, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_report(report):
    m, py, data = report["machine"], report["python"], report["data"]
    print(f"machine: {m['cpu']}, {m['cpus']} CPUs, {m['system']} {m['machine']}")
    print(f"python: {py['implementation']} {py['version']}")
    print(f"data: {data['path']} ({data['documents']} documents), seed {report['seed']}; "
          f"{report['steps']} timed steps per engine after {report['warmup']} warm-up, "
          f"run {report['repeat']} time{'s' * (report['repeat'] != 1)}, engines taking turns, each run in a fresh process")
    sweep = len(report["configs"]) > 1
    header = (["n_layer", "n_embd", "block"] if sweep else []) + [
        "engine", "ms/step", "min-max", "speedup", "fwd ms", "bwd ms", "opt ms",
        "nodes/step", "bytes/node", "+bwd", "peak RSS MiB", "RSS growth MiB", "losses"]
    rows = []
    for c in report["configs"]:
        if not sweep:
            print(f"config: {config_label(c)} ({c['params']} params)")
        for r in c["results"]:
            t = r["ms_per_step"]
            agree = "-" if c["agree"] is None else ("== all" if c["agree"] else "DIFFER")
            if "max_rel_diff" in r:  # an engine that is not exact: how far from the exact ones
                agree = f"max rel {r['max_rel_diff']:.1e} vs {r['diff_against']}"
            row = [r["engine"], _ms(t["median"]), f"{_ms(t['min'])}-{_ms(t['max'])}",
                   "-" if r["speedup"] is None else f"{r['speedup']:.1f}x",
                   _ms(r["forward_ms"]), _ms(r["backward_ms"]), _ms(r["optimizer_ms"]),
                   _count(r["nodes_per_step"]), _count(r["bytes_per_node"]),
                   _count(r["bytes_per_node_with_backward"]),
                   _mib(r["peak_rss_bytes"]), _mib(r["rss_growth_bytes"]), agree]
            rows.append(([c["n_layer"], c["n_embd"], c["block_size"]] if sweep else []) + row)
    print()
    print(format_table(header, rows))
    print()
    print("ms/step: median and min-max over the timed steps, each step's time being its minimum over "
          "the runs; fwd/bwd/opt: medians of the forward (graph building), backward and optimizer phases.")
    print("nodes/step: nodes the step's forward creates (mean over the timed steps). bytes/node: "
          "compiled = the arena's columns per node (gradient and backward scratch included); pure = "
          "tracemalloc peak while one step's graph is built, over its nodes; +bwd: the same peak "
          "through backward too.")
    print("peak RSS: VmHWM while stepping (the worker process's; ru_maxrss where VmHWM cannot be reset); "
          "RSS growth: that peak minus the RSS before the first step.")
    for c in report["configs"]:
        where = f" at {config_label(c)}" if sweep else ""
        for r in c["results"]:
            if "max_rel_diff" in r:
                print(f"losses{where}: {r['engine']} within {r['max_rel_diff']:.1e} (relative) of "
                      f"{r['diff_against']}'s (the torch engine is not exact; it has no graph of nodes to count)")
        if c["agree"] is None:
            continue
        n = report["steps"] + report["warmup"]
        if c["agree"]:
            exact = [r["engine"] for r in c["results"] if "max_rel_diff" not in r]  # (torch: within, above)
            print(f"losses{where}: identical (==) on all {n} steps across {', '.join(exact)}")
        else:
            print(f"losses{where}: DIFFER, first at {c['first_mismatch']}")
