"""Training on one's own text: long documents cut to the block, a held-out validation set,
and `microgpt plot` for the --log file."""
import json
import struct
import sys

import pytest
from support import run_main, write_docs

from microgpt.plot import read_log
from microgpt.train import count_cut_documents, split_documents

DOCS = ["the quick brown fox", "jumps", "over the lazy dog", "a", "pack my box", "with five dozen",
        "liquor jugs", "sphinx of black quartz", "judge my vow", "how vexingly quick"]
TINY = ["--n-embd", "8", "--n-head", "2", "--block-size", "8", "--engine", "pure"]


@pytest.fixture
def text(tmp_path):
    return write_docs(tmp_path / "own.txt", DOCS)


def records(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_long_documents_are_cut_and_counted(text):
    # block 8: a document of 8 characters or more does not fit [BOS] + chars + [BOS]
    cut = sum(1 for d in DOCS if len(d) >= 8)
    assert count_cut_documents(DOCS, 8) == cut == 8
    status, out, err = run_main(["train", "-i", text, *TINY, "--steps", 2, "--num-samples", 0])
    assert status == 0, err
    assert f"docs longer than the block: {cut} of {len(DOCS)}, trained on their first 9 tokens" in out.splitlines()


def test_names_with_the_default_block_report_no_cut():
    assert count_cut_documents(["x" * 15], 16) == 0  # 15 characters + BOS + BOS: 16 predictions
    assert count_cut_documents(["x" * 16], 16) == 1


def test_split_is_deterministic_and_zero_keeps_everything():
    docs = [str(i) for i in range(10)]
    assert split_documents(docs, 0.0) == (docs, [])
    assert split_documents(docs, 0.25) == (docs[:8], docs[8:])  # round(2.5) == 2
    assert split_documents(docs, 0.01) == (docs[:9], docs[9:])  # at least one held out


def test_validation_loss_is_reported_and_draws_no_random_numbers(text, tmp_path):
    base = ["train", "-i", text, *TINY, "--steps", 6, "--num-samples", 4, "--val-fraction", 0.2]
    status, out_end, err = run_main([*base, "--log", tmp_path / "end.jsonl"])
    assert status == 0, err
    status, out_every, err = run_main([*base, "--eval-every", 2, "--log", tmp_path / "every.jsonl"])
    assert status == 0, err
    assert "held out for validation: 2 docs, training on 8" in out_every
    val_lines = [line for line in out_every.splitlines() if "val loss" in line]
    assert [line.split("|")[0].strip() for line in val_lines] == ["step    2 /    6", "step    4 /    6",
                                                                  "step    6 /    6"]
    every = records(tmp_path / "every.jsonl")
    end = records(tmp_path / "end.jsonl")
    assert [r["step"] for r in every if "val_loss" in r] == [2, 4, 6]
    assert [r for r in end if "val_loss" in r] == [r for r in every if "val_loss" in r and r["step"] == 6]
    # evaluating changes neither training nor the generator: same losses, same samples
    assert [r["loss"] for r in every if "loss" in r] == [r["loss"] for r in end if "loss" in r]
    assert every[-1]["samples"] == end[-1]["samples"]


def test_bad_val_fraction(text):
    for value in ("1", "-0.1", "abc"):
        status, out, err = run_main(["train", "-i", text, *TINY, "--steps", 1, "--val-fraction", value])
        assert status == 2
        assert err.startswith("microgpt: error:") and "--val-fraction" in err and len(err.splitlines()) == 1
    status, out, err = run_main(["train", "-i", text, *TINY, "--steps", 1, "--val-fraction", "0.99"])
    assert status == 2 and "none is left to train on" in err


# --- plot -------------------------------------------------------------------------

def write_log(path, lines):
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")


def test_read_log_keeps_the_last_value_of_a_repeated_step(tmp_path):
    log = tmp_path / "log.jsonl"
    write_log(log, [{"step": 1, "loss": 3.0, "lr": 0.01, "dt": 0.1}, {"step": 2, "loss": 2.9, "lr": 0.01, "dt": 0.1},
                    {"step": 2, "loss": 2.8, "lr": 0.01, "dt": 0.1}, {"step": 2, "val_loss": 3.1},
                    {"samples": ["a"]}])
    assert read_log(log) == ([(1, 3.0), (2, 2.8)], [(2, 3.1)])


def test_plot_draws_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    log = tmp_path / "train.jsonl"
    steps = [{"step": k, "loss": 3.3 - k / 100 + (k % 7) / 50, "lr": 0.01 * (1 - (k - 1) / 120), "dt": 0.2}
             for k in range(1, 121)]
    write_log(log, steps[:60] + [{"step": 60, "val_loss": 2.9}] + steps[60:] + [{"step": 120, "val_loss": 2.5},
                                                                                 {"samples": ["kamon"]}])
    for name in ("loss.png", "loss.svg"):
        out = tmp_path / name
        status, stdout, err = run_main(["plot", log, "--out", out])
        assert status == 0, err
        assert stdout.strip() == f"wrote {out}"
    png = (tmp_path / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (800, 450)
    assert b"<svg" in (tmp_path / "loss.svg").read_bytes()


def test_plot_without_matplotlib_says_so(tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    write_log(log, [{"step": 1, "loss": 3.0, "lr": 0.01, "dt": 0.1}])
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    status, out, err = run_main(["plot", log, "--out", tmp_path / "loss.png"])
    assert status == 2
    assert err.startswith("microgpt: error: plotting needs matplotlib") and len(err.splitlines()) == 1
    assert not (tmp_path / "loss.png").exists()


@pytest.mark.parametrize("content,mentions", [
    (None, "cannot read log file"),
    ("not json\n", "line 1 is not JSON"),
    ('{"samples": []}\n', "no training steps"),
])
def test_plot_bad_logs(tmp_path, content, mentions):
    log = tmp_path / "log.jsonl"
    if content is not None:
        log.write_text(content, encoding="utf-8")
    status, out, err = run_main(["plot", log, "--out", tmp_path / "loss.png"])
    assert status == 2
    assert err.startswith("microgpt: error:") and mentions in err and len(err.splitlines()) == 1
    assert not (tmp_path / "loss.png").exists()
