"""`microgpt bench`: the table, --json, sweeps, bad input, and that it measures the real step."""
import json

import pytest
from support import run_main

import microgpt.bench.runner
from microgpt import available_engines, get_engine
from microgpt.bench.measure import count_nodes, timed_step
from microgpt.bench.runner import summarize
from microgpt.data import Tokenizer
from microgpt.model import Config, init_state_dict
from microgpt.run import RunSettings, build_run
from microgpt.train import document_loss

SMALL = ["--steps", "2", "--n-embd", "8", "--n-head", "2", "--block-size", "8"]
ENGINES = available_engines()


@pytest.fixture(scope="module")
def sweep_json(names_cache):
    """One JSON sweep over two widths, shared by the tests that read it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MICROGPT_CACHE_DIR", str(names_cache))
        mp.delenv("MICROGPT_ENGINE", raising=False)
        code, out, err = run_main(["bench", "--json", "--steps", "2", "--n-embd", "8,16", "--n-head", "2",
                                  "--block-size", "8"])
    assert code == 0, err
    return json.loads(out)


def test_table_has_every_engine_and_reports_agreement():
    code, out, err = run_main(["bench"] + SMALL)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("machine: ") and "CPUs" in lines[0]
    assert lines[1].startswith("python: ")
    header = next(line for line in lines if line.lstrip().startswith("engine"))
    for column in ("ms/step", "speedup", "fwd ms", "bwd ms", "opt ms", "nodes/step", "bytes/node", "peak RSS"):
        assert column in header
    rows = {line.split()[0]: line for line in lines if line.split() and line.split()[0] in ENGINES}
    assert set(rows) == set(ENGINES)
    assert rows["pure"].split()[3] == "1.0x"
    if len(ENGINES) > 1:
        assert "losses: identical (==) on all 3 steps across " + ", ".join(ENGINES) in out


def test_json_has_the_fields(sweep_json):
    report = sweep_json
    assert report["machine"]["cpus"] >= 1 and report["machine"]["cpu"]
    assert report["python"]["version"]
    assert report["steps"] == 2 and report["warmup"] == 1 and report["engines"] == ENGINES
    assert report["data"]["documents"] > 30000
    for cfg in report["configs"]:
        assert [r["engine"] for r in cfg["results"]] == ENGINES
        for r in cfg["results"]:
            t = r["ms_per_step"]
            assert 0 < t["min"] <= t["median"] <= t["max"] and len(t["all"]) == 2
            for key in ("forward_ms", "backward_ms", "optimizer_ms", "bytes_per_node",
                        "bytes_per_node_with_backward", "nodes_per_step"):
                assert r[key] > 0, key
            assert len(r["losses"]) == 3
            assert r["peak_rss_bytes"] is None or r["peak_rss_bytes"] > 0
            assert r["speedup"] > 0
        if len(ENGINES) > 1:
            assert cfg["agree"] is True and cfg["first_mismatch"] is None
            # the engines count the same graph: Value constructions (pure) == arena growth (compiled)
            assert len({r["nodes_per_step"] for r in cfg["results"]}) == 1


def test_sweep_gives_one_configuration_per_value(sweep_json):
    configs = sweep_json["configs"]
    shapes = [(c["n_layer"], c["n_embd"], c["block_size"], c["n_head"]) for c in configs]
    assert shapes == [(1, 8, 8, 2), (1, 16, 8, 2)]
    assert configs[0]["params"] < configs[1]["params"]
    assert configs[0]["nodes_per_step"] < configs[1]["nodes_per_step"]


def test_sweep_table_lists_each_configuration():
    code, out, err = run_main(["bench", "--steps", "1", "--warmup", "0", "--n-embd", "4,8", "--n-head", "2",
                              "--block-size", "4", "--engines", ENGINES[-1]])
    assert code == 0, err
    rows = [line.split() for line in out.splitlines() if ENGINES[-1] in line.split()[3:4]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("1", "4", "4"), ("1", "8", "4")]


@pytest.mark.parametrize("argv, fragment", [
    (["--n-embd", "8,10", "--n-head", "4"], "--n-embd 10 is not divisible by --n-head 4"),
    (["--n-embd", "8,,16"], "--n-embd"),
    (["--block-size", "0"], "--block-size"),
    (["--engines", "fast"], "unknown engine 'fast'"),
])
def test_bad_input_is_one_line_and_exit_2(argv, fragment):
    code, out, err = run_main(["bench"] + argv)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("microgpt: error: ") and fragment in err


def test_the_bench_times_the_trainers_own_step(engine):
    """timed_step runs Trainer.train_step with a clock at each phase's end: the step's
    loss is train_step's, and the phases fit inside the step."""
    settings = RunSettings(seed=7, n_embd=8, n_head=2, block_size=8, steps=3)
    plain = build_run(engine, settings).trainer
    timed = build_run(engine, settings).trainer
    for _ in range(3):
        loss, seconds = timed_step(timed)
        assert loss == plain.train_step()[1]
        assert set(seconds) == {"forward", "backward", "optimizer", "step"}
        assert all(t >= 0 for t in seconds.values())
        assert seconds["forward"] + seconds["backward"] + seconds["optimizer"] <= seconds["step"]
    assert timed.step == plain.step == 3


def test_train_step_calls_lap_as_each_phase_ends(engine):
    trainer = build_run(engine, RunSettings(n_embd=8, n_head=2, block_size=8, steps=2)).trainer
    laps = []
    before = [p.data for p in trainer.params]
    watched = trainer.sd["wpe"][0][0]  # position 0's embedding: every document uses it
    trainer.train_step(lap=lambda phase: laps.append((phase, watched.grad)))
    assert [phase for phase, _ in laps] == ["forward", "backward", "optimizer"]
    assert laps[0][1] == 0 and laps[1][1] != 0 and laps[2][1] == 0  # backward fills, the update zeroes
    assert [p.data for p in trainer.params] != before


@pytest.mark.skipif("compiled" not in ENGINES, reason="the compiled engine is not built here")
def test_pure_node_count_equals_the_arena_growth():
    tokenizer = Tokenizer.from_documents(["emma", "olivia"])
    config = Config(vocab_size=tokenizer.vocab_size, n_embd=8, n_head=2, block_size=8)
    tokens = tokenizer.document_tokens("olivia")
    counts = {}
    for name in ("pure", "compiled"):
        eng = get_engine(name)
        with eng.graph():
            sd = init_state_dict(eng.Value, config)
            counts[name] = count_nodes(eng, lambda: document_loss(sd, config, tokens))
    assert counts["pure"] == counts["compiled"] > 0
    # and the pure constructor is restored afterwards
    assert get_engine("pure").Value.__init__.__name__ == "__init__"


def test_a_failing_worker_is_one_line_and_exit_1(monkeypatch):
    monkeypatch.setattr(microgpt.bench.runner, "WORKER_CODE", "import sys; sys.exit('RuntimeError: boom')")
    code, out, err = run_main(["bench"] + SMALL)
    assert code == 1 and out == ""
    assert err == "microgpt: error: the pure engine failed at n_layer 1, n_embd 8, block_size 8, " \
                  "n_head 2: RuntimeError: boom\n"


def test_summary_flags_the_first_differing_step():
    def result(engine, losses):
        return {"engine": engine, "params": 10, "nodes_per_step": 5, "losses": losses,
                "ms_per_step": {"median": 100.0 if engine == "pure" else 2.0}}

    pure, compiled = result("pure", [3.0, 2.5, 2.0]), result("compiled", [3.0, 2.5000000000000004, 2.0])
    cfg = summarize({"n_layer": 1}, [pure, compiled])
    assert cfg["agree"] is False
    assert cfg["first_mismatch"] == "step 2: pure 2.5 != compiled 2.5000000000000004"
    assert cfg["results"][1]["speedup"] == 50.0
    cfg = summarize({"n_layer": 1}, [result("compiled", [1.0])])
    assert cfg["agree"] is None and cfg["results"][0]["speedup"] is None
