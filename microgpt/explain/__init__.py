"""`microgpt explain`: a trained run on one self-contained HTML page.

numbers.py runs the model code and counts its graph, inputs.py reads the log and a
benchmark report, svg.py draws, sections.py and page.py assemble the page. This
file puts them together and writes the page atomically, all checks done first, so
that a failure leaves no file (and an earlier page as it was).
"""
import os
import time

from .. import _pure, rundir
from ..data import Tokenizer, load_documents, write_atomic
from ..engine import get_engine
from ..errors import DataError
from ..plot import check_out, check_out_path
from ..sampling import check_prompt
from . import numbers, sections
from .inputs import read_bench, read_log
from .page import page

NUM_SAMPLES = 10




def run_facts(ckpt, params, sampler):
    c = ckpt.config
    try:
        docs, _, sha = load_documents(ckpt.data_path)
        documents = f"{len(docs):,}" if sha == ckpt.data_sha256 else "(the data file has changed since)"
    except DataError:
        documents = "(the data file is not here)"
    return [("model", f"{c.n_layer} layer{'s' * (c.n_layer > 1)}, n_embd {c.n_embd}, {c.n_head} heads, "
                      f"block size {c.block_size}, vocabulary {c.vocab_size}"),
            ("parameters", f"{params:,}"),
            ("training", f"step {ckpt.step:,} of {ckpt.num_steps:,}, learning rate {ckpt.learning_rate} "
                         f"(linear decay to 0), seed {ckpt.seed}"),
            ("data", f"{ckpt.data_path} (SHA-256 {ckpt.data_sha256[:12]}…), documents: {documents}"
                     + (f", {ckpt.val_fraction:.0%} held out for validation" if ckpt.val_fraction else "")),
            ("engines", f"the names were drawn on the {sampler} engine, every other figure computed on the "
                        "pure engine (the specification): exact engines give the same numbers, bit for bit")]


def build(run_dir, *, log=None, prompt=None, temperature=0.5, seed=None, bench=None):
    """(html, data): the page of the run in run_dir and the figures embedded in it."""
    ckpt = rundir.load(run_dir)
    config, tokenizer = ckpt.config, Tokenizer(ckpt.chars)
    if prompt is not None:
        check_prompt(prompt, tokenizer, config.block_size)
        if not prompt:
            raise DataError("--prompt is empty: give a name, or leave --prompt out to follow a sampled one")
    log_data = read_log(log, ckpt) if log else None
    bench_data = read_bench(bench, config) if bench else None

    fast = get_engine("auto")  # draws the names: every engine draws the same ones
    sd_fast, sd = numbers.model_on(fast, ckpt), numbers.model_on(_pure, ckpt)  # (these draw weights)
    numbers.seeded(seed, ckpt.rng_state)  # then the names are those `microgpt sample` prints
    names = numbers.sample_names(fast, sd_fast, config, tokenizer, temperature, NUM_SAMPLES)
    name = prompt if prompt is not None else names[0][0]
    trace = numbers.trace_name(sd, config, tokenizer, name)
    steps = numbers.step_nodes(_pure, sd, config, tokenizer.document_tokens(name))
    wte = ckpt.weights["wte"]
    pca, share = numbers.pca_2d(wte)
    mats, total = numbers.matrices(ckpt)

    body = [sections.training(log_data, run_facts(ckpt, total, fast.name), log),
            sections.walkthrough(trace, names, tokenizer, temperature, prompt is not None),
            sections.attention(trace, tokenizer, config),
            sections.embeddings(wte, pca, share, tokenizer, mats, total),
            sections.computation(steps, total, bench_data)]
    data = {"run": os.path.abspath(run_dir), "chars": ckpt.chars, "name": name, "tokens": trace["tokens"],
            "probs": trace["probs"], "attention": trace["attention"],
            "samples": [{"name": n, "probs": p} for n, p in names], "temperature": temperature,
            "stages": steps["stages"], "reachable": steps["reachable"]}
    subtitle = (f"A trained model from <code>{sections.esc(run_dir)}</code>, seen from the inside. "
                "Hover over any mark for its number.")
    return page("microgpt: inside a trained model", subtitle, body, data), data


def explain(run_dir, out=None, **options):
    """Write the page of run_dir to out (default run_dir/explain.html); returns (path, seconds)."""
    t0 = time.perf_counter()
    if not os.path.isdir(run_dir):
        rundir.load(run_dir)  # words the error
    out = out or os.path.join(run_dir, "explain.html")
    check_out_path(out, run_dir, "page file", options.get("log"), options.get("bench"))
    html, _ = build(run_dir, **options)
    check_out(out, "page file")  # again: building takes a moment
    try:
        write_atomic(out, html.encode("utf-8"), make_folder=False)
    except OSError as e:
        raise DataError(f"cannot write {out}: {e.strerror or e}") from None
    return out, time.perf_counter() - t0
