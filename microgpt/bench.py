"""`microgpt bench`: every engine on the same documents, side by side.

For each configuration (a sweep when --n-layer, --n-embd or --block-size hold
comma lists) and each engine, a fresh Python process (the worker, below) seeds
the generator, shuffles the documents, draws the weights and runs the same
training steps as ``microgpt train``, timing each step and its three phases:
forward (building the loss graph), backward, optimizer. The step is
Trainer.train_step with clocks between the phases (tests/test_bench_cli.py
checks it gives Trainer's losses). A fresh process per engine keeps the
measurements apart: the pure engine runs as the reference program runs (the
garbage collector as Python sets it, nothing else in the heap), and its peak
RSS is its own.

Reported per engine: ms per step (median and min-max over the timed steps),
the speedup against pure, forward/backward/optimizer medians, graph nodes per
step (nodes created by the step's forward, counted by the engine itself: the
arena's growth for compiled, Value constructions for pure), bytes per node
(compiled: the arena's columns per node; pure: tracemalloc's peak while one
step's graph is built, over its nodes), peak RSS while stepping and its growth
over the RSS before the first step, and whether the losses of all engines agree
exactly (==) step by step.
"""
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time

WORKER_CODE = "from microgpt.bench import worker_main; worker_main()"


class BenchError(Exception):
    """A worker failed; the message is one line."""


# ---------------------------------------------------------------- the command line

def add_parser(subparsers):
    """Register 'bench' on the CLI's subparsers."""
    import argparse
    from .cli import HelpFormatter, non_negative_int, positive_int
    from .engine import CHOICES

    def positive_int_list(text):
        parts = [part.strip() for part in text.split(",")]
        if not all(parts):
            raise argparse.ArgumentTypeError(f"expected whole numbers separated by commas, got {text!r}")
        values = [positive_int(part) for part in parts]
        return list(dict.fromkeys(values))  # duplicates run once

    b = subparsers.add_parser(
        "bench", help="time every engine on the same training steps, side by side",
        formatter_class=HelpFormatter,
        description="Run the same training steps on every available engine, each in a fresh process, "
        "and print ms per step (median, min-max), the speedup against pure, forward/backward/optimizer "
        "times, graph nodes per step, bytes per node, peak RSS, and whether the engines' losses agree "
        "exactly. Comma lists for --n-layer, --n-embd and --block-size sweep every combination. "
        "Exit status 1 if exact engines disagree.")
    b.add_argument("-i", "--input", metavar="FILE", help="UTF-8 text, one document per line "
                   "(default: the names data set, cached in $MICROGPT_CACHE_DIR or ~/.cache/microgpt)")
    b.add_argument("--seed", type=int, default=42, help="seed of the one random generator")
    b.add_argument("--steps", type=positive_int, default=5, help="timed training steps per engine")
    b.add_argument("--warmup", type=non_negative_int, default=1,
                   help="untimed steps before the timed ones (their losses are compared too)")
    b.add_argument("--repeat", type=positive_int, default=3,
                   help="runs of the same steps per engine, engines taking turns; each step counts "
                   "its fastest run, so a busy moment of the machine does not skew one engine")
    b.add_argument("--n-layer", type=positive_int_list, default=[1], metavar="N[,N...]",
                   help="transformer layers (a comma list sweeps)")
    b.add_argument("--n-embd", type=positive_int_list, default=[16], metavar="N[,N...]",
                   help="embedding width (a comma list sweeps)")
    b.add_argument("--block-size", type=positive_int_list, default=[16], metavar="N[,N...]",
                   help="context length in tokens (a comma list sweeps)")
    b.add_argument("--n-head", type=positive_int, default=4, help="attention heads (must divide every --n-embd)")
    b.add_argument("--engines", default=None, metavar="NAME[,NAME...]",
                   help="engines to run, from " + ", ".join(c for c in CHOICES if c != "auto")
                   + " (default: every engine built here)")
    b.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    b.set_defaults(func=run)
    return b


def parse_engines(text):
    from .cli import UsageError
    from .engine import available_engines
    available = available_engines()
    if text is None:
        return available
    names = list(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    if not names:
        raise UsageError("--engines needs at least one engine name")
    for name in names:
        if name not in ("pure", "compiled", "replay"):
            raise UsageError(f"--engines: unknown engine {name!r}: choose from pure, compiled, replay")
        if name not in available:
            raise UsageError(f"--engines: the {name} engine is not built in this installation "
                             f"(available: {', '.join(available)})")
    return names


def configurations(args):
    """Every (n_layer, n_embd, block_size) of the sweep, n_embd checked against n_head."""
    from .cli import UsageError
    bad = [n for n in args.n_embd if n % args.n_head]
    if bad:
        raise UsageError(f"--n-embd {','.join(map(str, bad))} is not divisible by --n-head {args.n_head}")
    return [dict(n_layer=nl, n_embd=ne, block_size=bs, n_head=args.n_head)
            for nl, ne, bs in itertools.product(args.n_layer, args.n_embd, args.block_size)]


def run(args):
    """`microgpt bench`: returns the exit status (0; 1 if exact engines disagree or a worker fails)."""
    from .data import load_documents
    engine_names = parse_engines(args.engines)
    configs = configurations(args)
    docs, data_path, data_sha256 = load_documents(args.input)  # fetches the names data once, here
    data_path = os.path.abspath(data_path)
    report = {
        "machine": machine_info(),
        "python": python_info(),
        "data": {"path": data_path, "sha256": data_sha256, "documents": len(docs)},
        "seed": args.seed, "steps": args.steps, "warmup": args.warmup, "repeat": args.repeat,
        "engines": engine_names,
        "configs": [],
    }
    progress = sys.stderr.isatty() and not args.json
    try:
        for cfg in configs:
            runs = {name: [] for name in engine_names}
            for rep in range(args.repeat):  # engines take turns, so both meet the same noise
                for name in engine_names:
                    if progress:
                        print(f"bench: {name} at {config_label(cfg)}, run {rep + 1} of {args.repeat} ...",
                              file=sys.stderr, flush=True)
                    spec = dict(cfg, engine=name, input=data_path, sha256=data_sha256, seed=args.seed,
                                steps=args.steps, warmup=args.warmup)
                    runs[name].append(run_worker(spec))
            results = [merge_repeats(runs[name]) for name in engine_names]
            report["configs"].append(summarize(cfg, results))
    except BenchError as e:
        print(f"microgpt: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    disagree = [c for c in report["configs"] if c["agree"] is False]
    if disagree:
        print(f"microgpt: error: the engines' losses differ at {config_label(disagree[0])}: "
              f"{disagree[0]['first_mismatch']}", file=sys.stderr)
        return 1
    return 0


def config_label(cfg):
    return (f"n_layer {cfg['n_layer']}, n_embd {cfg['n_embd']}, block_size {cfg['block_size']}, "
            f"n_head {cfg['n_head']}")


def run_worker(spec):
    """Measure one engine at one configuration in a fresh interpreter; returns its result dict."""
    env = dict(os.environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = package_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("MICROGPT_ENGINE", None)
    # run from the package's folder: `python -c` puts the working directory first on
    # sys.path, where a source checkout would shadow the installed package
    proc = subprocess.run([sys.executable, "-c", WORKER_CODE], input=json.dumps(spec),
                          capture_output=True, text=True, env=env, cwd=package_parent)
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        raise BenchError(f"the {spec['engine']} engine failed at {config_label(spec)}: {last}")
    return json.loads(proc.stdout)


def summarize(cfg, results):
    """One configuration's entry: the engines' results, speedups, and loss agreement."""
    by_name = {r["engine"]: r for r in results}
    pure = by_name.get("pure")
    for r in results:
        r["speedup"] = (pure["ms_per_step"]["median"] / r["ms_per_step"]["median"]) if pure else None
    agree, mismatch = None, None
    if len(results) > 1:
        ref = results[0]
        agree = True
        for r in results[1:]:
            for step, (a, b) in enumerate(zip(ref["losses"], r["losses"]), start=1):
                if a != b:
                    agree = False
                    mismatch = mismatch or (f"step {step}: {ref['engine']} {a!r} != {r['engine']} {b!r}")
                    break
    return dict(cfg, params=results[0]["params"], nodes_per_step=results[0]["nodes_per_step"],
                results=results, agree=agree, first_mismatch=mismatch)


# ---------------------------------------------------------------- machine and output

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
          f"run {report['repeat']} times, engines taking turns, each run in a fresh process")
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
            row = [r["engine"], _ms(t["median"]), f"{_ms(t['min'])}-{_ms(t['max'])}",
                   "-" if r["speedup"] is None else f"{r['speedup']:.1f}x",
                   _ms(r["forward_ms"]), _ms(r["backward_ms"]), _ms(r["optimizer_ms"]),
                   f"{r['nodes_per_step']:.0f}", f"{r['bytes_per_node']:.0f}",
                   f"{r['bytes_per_node_with_backward']:.0f}",
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
    print("peak RSS: VmHWM while stepping (the worker process's); RSS growth: that peak minus the "
          "RSS before the first step.")
    for c in report["configs"]:
        if c["agree"] is None:
            continue
        where = f" at {config_label(c)}" if sweep else ""
        n = report["steps"] + report["warmup"]
        if c["agree"]:
            print(f"losses{where}: identical (==) on all {n} steps across {', '.join(report['engines'])}")
        else:
            print(f"losses{where}: DIFFER, first at {c['first_mismatch']}")


# ---------------------------------------------------------------- the worker (a fresh process)

def _proc_status_kib(field):
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_peak_rss():
    """Reset the kernel's RSS high-water mark (Linux); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _ru_maxrss_bytes():
    try:
        import resource
    except ImportError:
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss if sys.platform == "darwin" else maxrss * 1024


class RSSMeter:
    """Peak RSS over a stretch of the run, and its growth over the RSS at the start."""

    def start(self):
        rss = _proc_status_kib("VmRSS")
        self.reset = _reset_peak_rss() and rss is not None
        if self.reset:
            self.before = rss * 1024
            self.method = "VmHWM after resetting it (/proc/self/clear_refs)"
        else:  # a fresh process: the peak so far is about where it stands now
            self.before = _ru_maxrss_bytes()
            self.method = "ru_maxrss"

    def stop(self):
        peak = _proc_status_kib("VmHWM") * 1024 if self.reset else _ru_maxrss_bytes()
        growth = None if peak is None or self.before is None else max(0, peak - self.before)
        return peak, growth


def timed_step(trainer):
    """Trainer.train_step, with a clock between its phases. Returns (loss, seconds by phase)."""
    from .train import document_loss
    clock = time.perf_counter
    step = trainer.step
    doc = trainer.docs[step % len(trainer.docs)]
    tokens = trainer.tokenizer.document_tokens(doc)
    lr_t = trainer.lr_at(step)
    t0 = clock()
    with trainer.engine.graph():
        loss = document_loss(trainer.sd, trainer.config, tokens)
        t1 = clock()
        loss.backward()
        t2 = clock()
        loss_value = loss.data
        trainer.optimizer.step(lr_t, step)
        t3 = clock()
        del loss  # the pure graph is freed here, as at Trainer.train_step's return
    t4 = clock()
    trainer.step += 1
    return loss_value, {"forward": t1 - t0, "backward": t2 - t1, "optimizer": t3 - t2,
                        "release": t4 - t3, "step": t4 - t0}


def count_nodes(engine, build):
    """Nodes that build() creates, counted by the engine: the arena's growth (compiled),
    or the Value constructions (pure). build runs inside a graph scope."""
    if hasattr(engine, "default_arena"):
        arena = engine.default_arena()
        with engine.graph():
            mark = len(arena)
            build()
            return len(arena) - mark
    cls = engine.Value
    original = cls.__dict__["__init__"]
    count = 0

    def counting_init(self, *args, **kwargs):
        nonlocal count
        count += 1
        original(self, *args, **kwargs)

    cls.__init__ = counting_init
    try:
        with engine.graph():
            build()
    finally:
        cls.__init__ = original
    return count


def graph_bytes_per_node(engine, build, nodes):
    """Bytes per node of the graph build() makes: (while building, with backward too, method).

    compiled: the arena's columns per node, which already hold the gradients and the
    backward's scratch, so both figures are the same. pure: tracemalloc's peak over
    the build (Values, their tuples and floats), then over build and backward (the
    gradients' floats, the topological order and its visited set), over the nodes.
    """
    if hasattr(engine, "default_arena"):
        arena = engine.default_arena()
        with engine.graph():
            build()
            bpn = arena.bytes_per_node
        return bpn, bpn, "arena columns per node incl. gradient and backward scratch (Arena.bytes_per_node)"
    import tracemalloc
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        with engine.graph():
            loss = build()
            peak_build = tracemalloc.get_traced_memory()[1]
            loss.backward()
            peak_backward = tracemalloc.get_traced_memory()[1]
            del loss
    finally:
        tracemalloc.stop()
    return ((peak_build - base) / nodes, (peak_backward - base) / nodes,
            "tracemalloc peak while building the graph (then: and running backward), over its nodes")


def _summary(seconds):
    ms = sorted(s * 1000 for s in seconds)
    q = statistics.quantiles(ms, n=4, method="inclusive") if len(ms) > 1 else [ms[0]] * 3
    return {"median": statistics.median(ms), "min": ms[0], "max": ms[-1], "q1": q[0], "q3": q[2], "all": ms}


def timing_summary(phases):
    """ms per step and the phases' medians, from one entry per timed step."""
    def median_ms(phase):
        return statistics.median(p[phase] for p in phases) * 1000

    return {"phases": phases, "ms_per_step": _summary([p["step"] for p in phases]),
            "forward_ms": median_ms("forward"), "backward_ms": median_ms("backward"),
            "optimizer_ms": median_ms("optimizer"), "release_ms": median_ms("release")}


def merge_repeats(runs):
    """One result from repeated runs of the same steps: each step's (and phase's) time is
    its minimum over the runs, which filters out what else the machine was doing. The
    runs must have computed the same losses."""
    base = dict(runs[0])
    for other in runs[1:]:
        if other["losses"] != base["losses"]:
            raise BenchError(f"the {base['engine']} engine gave different losses in two runs of the same steps")
    phases = [{k: min(run["phases"][i][k] for run in runs) for k in runs[0]["phases"][i]}
              for i in range(len(runs[0]["phases"]))]
    base.update(timing_summary(phases), repeats=len(runs))
    return base


def measure(spec):
    """One engine, one configuration: the worker's whole job. Returns a JSON-able dict."""
    import random
    from .data import Tokenizer, load_documents
    from .engine import get_engine
    from .model import Config, init_state_dict, parameters
    from .train import Trainer, document_loss

    eng = get_engine(spec["engine"])
    random.seed(spec["seed"])
    docs, _, sha = load_documents(spec["input"])
    if sha != spec["sha256"]:
        raise BenchError(f"{spec['input']} changed while the benchmark ran")
    random.shuffle(docs)
    tokenizer = Tokenizer.from_documents(docs)
    config = Config(vocab_size=tokenizer.vocab_size, n_layer=spec["n_layer"], n_embd=spec["n_embd"],
                    block_size=spec["block_size"], n_head=spec["n_head"])
    sd = init_state_dict(eng.Value, config)
    total = spec["warmup"] + spec["steps"]
    trainer = Trainer(eng, sd, config, docs, tokenizer, total)

    rss = RSSMeter()
    rss.start()
    losses, phases = [], []
    for i in range(total):
        loss, seconds = timed_step(trainer)
        losses.append(loss)
        if i >= spec["warmup"]:
            phases.append(seconds)
    peak_rss, rss_growth = rss.stop()

    # untimed passes over the timed steps' documents: nodes per step, bytes per node
    timed_docs = [docs[s % len(docs)] for s in range(spec["warmup"], total)]
    positions = [min(config.block_size, len(doc) + 1) for doc in timed_docs]
    nodes_by_positions = {}
    for doc, n in zip(timed_docs, positions):
        if n not in nodes_by_positions:
            tokens = tokenizer.document_tokens(doc)
            nodes_by_positions[n] = count_nodes(eng, lambda: document_loss(sd, config, tokens))
    nodes = [nodes_by_positions[n] for n in positions]
    first_tokens = tokenizer.document_tokens(timed_docs[0])
    bpn, bpn_backward, bpn_method = graph_bytes_per_node(eng, lambda: document_loss(sd, config, first_tokens),
                                           nodes_by_positions[positions[0]])

    return {
        "engine": eng.name, "exact": bool(getattr(eng, "exact", eng.name == "pure")),  # pure: the spec
        "params": len(parameters(sd)), "vocab_size": tokenizer.vocab_size,
        **timing_summary(phases),
        "nodes_per_step": statistics.mean(nodes), "nodes_by_step": nodes,
        "bytes_per_node": bpn, "bytes_per_node_with_backward": bpn_backward,
        "bytes_per_node_method": bpn_method,
        "peak_rss_bytes": peak_rss, "rss_growth_bytes": rss_growth, "rss_method": rss.method,
        "losses": losses,
    }


def worker_main():
    """Entry point of the worker process: a JSON spec on stdin, the JSON result on stdout."""
    spec = json.loads(sys.stdin.read())
    try:
        result = measure(spec)
    except Exception as e:  # one line for the parent to show
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    json.dump(result, sys.stdout)
