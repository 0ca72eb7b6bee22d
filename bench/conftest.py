"""Fixtures of the benchmarks: the engines side by side, two configurations, fixed inputs.

Each benchmark runs once per engine built here (pure, compiled, replay) (the ``engine`` fixture) and per
configuration (``config_name``): the default one and a larger one (n_layer 2,
n_embd 64, block 32) fed a document long enough to fill its block. Everything
is seeded: the run is built as ``microgpt train --seed 42`` builds it (so the
weights are the reference run's), the document is the first name of the
shuffle, the reference's step-0 document (for the large configuration the first
32 characters of the shuffled names run together), and so are the optimizer's
gradients and the sampler's generator.

Benchmarks of one workload at one configuration share a group, so the engines
sit in one table; the summary at the end gives each group's pure/compiled ratio
of medians. The pure engine runs as the reference runs: Python's garbage
collector left on (pytest-benchmark leaves it alone unless --benchmark-disable-gc).
"""
import math
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from microgpt.data import Tokenizer
from microgpt.model import Config, parameters
from microgpt.run import RunSettings, build_run
from microgpt.train import BETA1, BETA2, EPS

pytest_plugins = ["shared_fixtures"]  # tests/shared_fixtures.py: session checks, names_txt, engine

SEED = 42
CONFIGS = {
    "default": dict(n_layer=1, n_embd=16, block_size=16, n_head=4),
    "large": dict(n_layer=2, n_embd=64, block_size=32, n_head=4),
}
MAX_ROUNDS = 1000


def is_slow(engine_name, config_name):
    """The pure engine at the large configuration: tens of seconds per round (6.8M nodes a step)."""
    return engine_name == "pure" and config_name == "large"


def benchmarks_disabled(config):
    session = getattr(config, "_benchmarksession", None)
    if session is not None:
        return session.disabled
    return config.getoption("benchmark_disable", False) and not config.getoption("benchmark_enable", False)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(params=list(CONFIGS))
def config_name(request):
    return request.param


@dataclass
class Workload:
    """One engine's model at one configuration, and the fixed document it is fed."""
    engine: object
    config_name: str
    config: Config
    tokenizer: Tokenizer
    doc: str
    tokens: list
    sd: dict
    params: list
    runner: object  # the trainer's document loss: the model code, or its replay
    seed: int = SEED

    @property
    def slow(self):
        return is_slow(self.engine.name, self.config_name)

    def loss(self):
        return self.runner(self.tokens)

    def zero_grads(self):
        for p in self.params:
            p.grad = 0

    def optimizer(self):
        return self.engine.Adam(self.params, beta1=BETA1, beta2=BETA2, eps=EPS)


def fixed_document(docs, config_name):
    if config_name == "default":
        return docs[0]
    block = CONFIGS[config_name]["block_size"]
    return "".join(docs)[:block]  # block characters: block + 2 tokens, every position used


@contextmanager
def make_workload(engine, config_name, names_txt):
    """The run of 'microgpt train --seed 42' at the configuration. On compiled its weights
    live in a graph scope, so they are released when the benchmark is done."""
    with engine.graph():
        run = build_run(engine, RunSettings(input=str(names_txt), seed=SEED, **CONFIGS[config_name]))
        doc = fixed_document(run.docs, config_name)
        yield Workload(engine, config_name, run.config, run.tokenizer, doc, run.tokenizer.document_tokens(doc),
                       run.sd, parameters(run.sd), run.trainer.document_loss)


@pytest.fixture
def workload(request, engine, config_name, names_txt):
    if request.node.get_closest_marker("slow") and benchmarks_disabled(request.config):
        pytest.skip("the pure engine at the large configuration takes minutes even for one run "
                    "(6.8M nodes a step); it runs with --benchmark-only")
    with make_workload(engine, config_name, names_txt) as w:
        yield w


class Graphs:
    """One graph per benchmark round, released before the next round is set up and at
    the end, so no release (nor, for pure, the freeing of the graph) is timed."""

    def __init__(self, engine):
        self.engine = engine
        self.scope = None
        self.keep = None  # holds the round's loss so that the pure graph outlives the round

    def open(self):
        self.close()
        self.scope = self.engine.graph()
        self.scope.__enter__()

    def close(self):
        self.keep = None
        if self.scope is not None:
            scope, self.scope = self.scope, None
            scope.__exit__(None, None, None)


@pytest.fixture
def graphs(workload):
    g = Graphs(workload.engine)
    yield g
    g.close()


# ---------------------------------------------------------------- running the rounds

@pytest.fixture
def run_rounds():
    """run(benchmark, target, setup=None, slow=False): see below."""
    return run


def run(benchmark, target, setup=None, slow=False):
    """benchmark.pedantic with the round count pytest-benchmark's calibration would pick:
    one untimed warm-up round measures the time, then enough rounds to fill
    --benchmark-max-time, at least --benchmark-min-rounds. Slow cases run one round."""
    if benchmark.disabled or slow:
        rounds = 1
    else:
        args, kwargs = (setup() if setup is not None else None) or ((), {})
        t0 = time.perf_counter()
        target(*args, **kwargs)
        seconds = time.perf_counter() - t0
        rounds = max(benchmark._min_rounds, min(MAX_ROUNDS, math.ceil(benchmark._max_time / max(seconds, 1e-9))))
    return benchmark.pedantic(target, setup=setup, rounds=rounds)


# ---------------------------------------------------------------- hooks

def pytest_collection_modifyitems(config, items):
    """Mark the pure engine at the large configuration slow (-m "not slow" leaves it out),
    except benchmarks marked no_graph (they build no graph: as quick as anywhere)."""
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.get_closest_marker("no_graph"):
            continue
        if params.get("engine") == "pure" and params.get("config_name") == "large":
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    """After pytest-benchmark's tables: each group's ratios, of the medians and of the minimums
    (on a busy machine the minimums are the steadier figure)."""
    session = getattr(config, "_benchmarksession", None)
    if session is None or session.disabled:
        return
    groups = defaultdict(dict)
    for bench in session.benchmarks:
        if not bench or bench.has_error:
            continue
        groups[bench.group][bench.extra_info.get("engine")] = (bench.stats.median, bench.stats.min)
    lines = []
    for group in sorted(groups, key=str):
        g = groups[group]
        if "pure" not in g:
            continue
        pm, pn = g["pure"]
        for other in ("compiled", "replay", "torch", "no-op", "no-op-c", "numbers-c"):  # the last three: the script's floors
            if other in g:
                om, on = g[other]
                lines.append(f"{group}: median pure {pm * 1e3:.2f} ms / {other} {om * 1e3:.3f} ms = "
                             f"{pm / om:.1f}x; min {pn * 1e3:.2f} / {on * 1e3:.3f} ms = {pn / on:.1f}x")
    for bench in session.benchmarks:  # bench_instructions.py: counts, not times
        info = bench.extra_info if bench and not bench.has_error else {}
        if "instructions_per_step" in info:
            lines.append(f"{bench.group} (callgrind, steps {info['steps']}): compiled "
                         f"{info['instructions_per_step'] / 1e6:.1f} M / do-nothing C Value "
                         f"{info['floor_instructions_per_step'] / 1e6:.1f} M = {info['ratio']:.2f}x")
        if "turns" in info:  # bench_script_turns.py: runs taking turns
            pure = info["step_seconds"]["pure"]
            for other, (ratio, paired, low, high) in info["turns"].items():
                lines.append(f"{bench.group} ({info['rounds']} rounds taking turns, steps {info['steps']}): "
                             f"median pure {pure * 1e3:.2f} ms / {other} {info['step_seconds'][other] * 1e3:.3f} ms"
                             f" = {ratio:.1f}x; the rounds' own ratios: median {paired:.1f}x, {low:.1f}-{high:.1f}x")
            for other, why in info["left_out"].items():
                lines.append(f"{bench.group}: {other} left out ({why})")
    if lines:
        terminalreporter.write_sep("-", "ratios (pure over compiled, replay; over the do-nothing Values: the ceilings)")
        for line in lines:
            terminalreporter.write_line(line)
