"""Running the workers: every engine at every configuration, engines taking turns,
each run in a fresh process; the repeated runs merged into one result per engine."""
import itertools
import json
import os
import statistics
import subprocess
import sys

from ..data import load_documents
from ..errors import BenchError
from .report import config_label, machine_info, python_info

WORKER_CODE = "from microgpt.bench.measure import worker_main; worker_main()"


def configurations(n_layers, n_embds, block_sizes, n_head):
    """Every (n_layer, n_embd, block_size) of the sweep, as config dicts."""
    return [dict(n_layer=nl, n_embd=ne, block_size=bs, n_head=n_head)
            for nl, ne, bs in itertools.product(n_layers, n_embds, block_sizes)]


def run(configs, engine_names, *, input_path=None, seed=42, steps=5, warmup=1, repeat=3, on_run=None):
    """Measure every engine at every configuration; returns the report (a JSON-able dict).

    on_run(engine name, config, repeat index) is called as each worker starts.
    Raises BenchError if a worker fails.
    """
    docs, data_path, data_sha256 = load_documents(input_path)  # fetches the names data once, here
    data_path = os.path.abspath(data_path)
    report = {
        "machine": machine_info(),
        "python": python_info(),
        "data": {"path": data_path, "sha256": data_sha256, "documents": len(docs)},
        "seed": seed, "steps": steps, "warmup": warmup, "repeat": repeat,
        "engines": engine_names,
        "configs": [],
    }
    for cfg in configs:
        runs = {name: [] for name in engine_names}
        for rep in range(repeat):  # engines take turns, so both meet the same noise
            for name in engine_names:
                if on_run is not None:
                    on_run(name, cfg, rep)
                spec = dict(cfg, engine=name, input=data_path, sha256=data_sha256, seed=seed,
                            steps=steps, warmup=warmup)
                runs[name].append(run_worker(spec))
        report["configs"].append(summarize(cfg, [merge_repeats(runs[name]) for name in engine_names]))
    return report


def run_worker(spec):
    """Measure one engine at one configuration in a fresh interpreter; returns its result dict."""
    env = dict(os.environ)
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


def _summary(seconds):
    ms = sorted(s * 1000 for s in seconds)
    return {"median": statistics.median(ms), "min": ms[0], "max": ms[-1], "all": ms}


def merge_repeats(runs):
    """One result from repeated runs of the same steps: each step's (and phase's) time is
    its minimum over the runs, which filters out what else the machine was doing. The
    runs must have computed the same losses."""
    result = dict(runs[0])
    for other in runs[1:]:
        if other["losses"] != result["losses"]:
            raise BenchError(f"the {result['engine']} engine gave different losses in two runs of the same steps")
    phases = [{k: min(run["phases"][i][k] for run in runs) for k in runs[0]["phases"][i]}
              for i in range(len(runs[0]["phases"]))]
    del result["phases"]
    result["ms_per_step"] = _summary([p["step"] for p in phases])
    for phase in ("forward", "backward", "optimizer"):
        result[f"{phase}_ms"] = statistics.median(p[phase] for p in phases) * 1000
    return result


INEXACT_ENGINES = ("torch",)


def max_relative_difference(losses, reference):
    return max(abs(a - b) / abs(b) if b else abs(a - b) for a, b in zip(losses, reference))


def summarize(cfg, results):
    """One configuration's entry: the engines' results, speedups, and loss agreement."""
    by_name = {r["engine"]: r for r in results}
    pure = by_name.get("pure")
    for r in results:
        r["speedup"] = (pure["ms_per_step"]["median"] / r["ms_per_step"]["median"]) if pure else None
    # the exact engines must agree with ==; the torch engine is not exact: its row gives
    # the largest relative difference of its losses from the first exact engine's
    exact = [r for r in results if r["engine"] not in INEXACT_ENGINES]
    for r in results:
        if r["engine"] in INEXACT_ENGINES and exact:
            r["max_rel_diff"] = max_relative_difference(r["losses"], exact[0]["losses"])
            r["diff_against"] = exact[0]["engine"]
    agree, mismatch = None, None
    if len(exact) > 1:
        ref = exact[0]
        agree = True
        for r in exact[1:]:
            for step, (a, b) in enumerate(zip(ref["losses"], r["losses"]), start=1):
                if a != b:
                    agree = False
                    mismatch = mismatch or (f"step {step}: {ref['engine']} {a!r} != {r['engine']} {b!r}")
                    break
    return dict(cfg, params=results[0]["params"], nodes_per_step=results[0]["nodes_per_step"],
                results=results, agree=agree, first_mismatch=mismatch)
