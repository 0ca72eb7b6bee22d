"""The worker: one engine at one configuration, measured in a fresh Python process.

It builds the run as ``microgpt train`` does (``run.build_run``) and times the
trainer's own steps, reading a clock as each phase of ``Trainer.train_step``
ends (forward builds the loss graph, then backward, then the optimizer). Then
it counts the nodes of the timed steps' graphs and their bytes per node.
A JSON spec comes on stdin; the JSON result goes to stdout.
"""
import json
import statistics
import sys
import time

from ..engine import get_engine
from ..errors import DataError
from ..model import parameters
from ..run import RunSettings, build_run
from ..train import document_loss

PHASES = ("forward", "backward", "optimizer")


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
    """Peak RSS over a stretch of the run (VmHWM after resetting it, else ru_maxrss),
    and its growth over the RSS at the start."""

    def start(self):
        rss = _proc_status_kib("VmRSS")
        self.reset = _reset_peak_rss() and rss is not None
        if self.reset:
            self.before = rss * 1024
        else:  # a fresh process: the peak so far is about where it stands now
            self.before = _ru_maxrss_bytes()

    def stop(self):
        peak = _proc_status_kib("VmHWM") * 1024 if self.reset else _ru_maxrss_bytes()
        growth = None if peak is None or self.before is None else max(0, peak - self.before)
        return peak, growth


def timed_step(trainer):
    """trainer.train_step(), timed: (loss, seconds by phase and for the whole step)."""
    clock = time.perf_counter
    marks = []
    t0 = clock()
    _, loss, _ = trainer.train_step(lap=lambda phase: marks.append(clock()))
    t_end = clock()
    ends = dict(zip(PHASES, marks))
    starts = dict(zip(PHASES, [t0] + marks))
    seconds = {phase: ends[phase] - starts[phase] for phase in PHASES}
    seconds["step"] = t_end - t0
    return loss, seconds


def compact_graph(engine, build):
    """(nodes, edges) of the graph build() makes on an arena engine, built compactly
    (each sum of products as one node, counted as the nodes and edges it stands for:
    a large model's count needs no whole graph in memory), plus what a full arena
    reclaimed meanwhile (it reclaims what no handle reaches before it grows). build
    runs inside a graph scope."""
    from ..replay import compact_sums
    arena = engine.default_arena()
    with compact_sums(arena), engine.graph():
        n0, e0, r0 = len(arena), arena.num_edges, arena.reclaimed
        u0, ue0 = arena.unmade, arena.unmade_edges
        build()
        nodes = len(arena) - n0 + arena.reclaimed - r0 + arena.unmade - u0
        return nodes, arena.num_edges - e0 + arena.unmade_edges - ue0


def count_nodes(engine, build):
    """Nodes that build() creates, counted by the engine: compact_graph's count
    (compiled), or the Value constructions (pure). build runs inside a graph scope."""
    if hasattr(engine, "default_arena"):
        return compact_graph(engine, build)[0]
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


def graph_bytes_per_node(engine, build, nodes, edges=None):
    """Bytes per node of the graph build() makes: (while building, with backward too).

    compiled: the arena's columns for the graph's nodes and edges (as compact_graph
    counted them: nothing is built again), over its nodes; they already hold the
    gradients and the backward's scratch, so both figures are the same. pure:
    tracemalloc's peak over
    the build (Values, their tuples and floats), then over build and backward (the
    gradients' floats, the topological order and its visited set), over the nodes.
    """
    if hasattr(engine, "default_arena"):
        from .._engine import EDGE_BYTES, NODE_BYTES
        bpn = NODE_BYTES + EDGE_BYTES * edges / nodes
        return bpn, bpn
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
    return (peak_build - base) / nodes, (peak_backward - base) / nodes


def measure(spec):
    """One engine, one configuration: the worker's whole job. Returns a JSON-able dict."""
    eng = get_engine(spec["engine"])
    total = spec["warmup"] + spec["steps"]
    settings = RunSettings(input=spec["input"], seed=spec["seed"], n_layer=spec["n_layer"],
                           n_embd=spec["n_embd"], block_size=spec["block_size"], n_head=spec["n_head"],
                           steps=total)
    run = build_run(eng, settings)
    if run.data_sha256 != spec["sha256"]:
        raise DataError(f"{spec['input']} changed while the benchmark ran")
    trainer, sd, config = run.trainer, run.sd, run.config

    rss = RSSMeter()
    rss.start()
    losses, phases = [], []
    for i in range(total):
        loss, seconds = timed_step(trainer)
        losses.append(loss)
        if i >= spec["warmup"]:
            phases.append(seconds)
    peak_rss, rss_growth = rss.stop()

    if getattr(eng, "trains_batches", False):  # the torch engine: tensors, no graph of nodes to count
        return {"engine": eng.name, "params": len(parameters(sd)), "phases": phases, "nodes_per_step": None,
                "bytes_per_node": None, "bytes_per_node_with_backward": None,
                "peak_rss_bytes": peak_rss, "rss_growth_bytes": rss_growth, "losses": losses}

    # untimed passes over the timed steps' documents: nodes per step, bytes per node
    timed_tokens = [trainer.tokens_at(s) for s in range(spec["warmup"], total)]
    positions = [min(config.block_size, len(tokens) - 1) for tokens in timed_tokens]
    def graph_size(build):  # (nodes, edges): the arena engines count edges too
        return compact_graph(eng, build) if hasattr(eng, "default_arena") else (count_nodes(eng, build), None)

    graph_by_positions = {}
    for tokens, n in zip(timed_tokens, positions):
        if n not in graph_by_positions:
            graph_by_positions[n] = graph_size(lambda: document_loss(sd, config, tokens))
    nodes = [graph_by_positions[n][0] for n in positions]
    first = timed_tokens[0]
    bpn, bpn_backward = graph_bytes_per_node(eng, lambda: document_loss(sd, config, first),
                                             *graph_by_positions[positions[0]])
    return {
        "engine": eng.name, "params": len(parameters(sd)), "phases": phases,
        "nodes_per_step": statistics.mean(nodes),
        "bytes_per_node": bpn, "bytes_per_node_with_backward": bpn_backward,
        "peak_rss_bytes": peak_rss, "rss_growth_bytes": rss_growth,
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
