"""The command line as a user meets it: bad input, --help, the entry points, a run on own text.

Bad input must end in exactly one line on stderr, 'microgpt: error: ...', and
exit status 2, never a traceback. Most cases run main(argv) in-process (fast);
a few run the real command to prove the same holds for the process itself.
"""
import re
import shutil
import socket
import subprocess

import pytest
from support import assert_one_error_line, child_env, run_module

from microgpt.cli import main



@pytest.fixture
def blank_file(tmp_path):
    f = tmp_path / "blank.txt"
    f.write_bytes(b"\n   \n\t\r\n\n")
    return f


@pytest.fixture
def latin1_file(tmp_path):
    f = tmp_path / "latin1.txt"
    f.write_bytes("zoë\nrenée\n".encode("latin-1"))  # 0xeb is not UTF-8 on its own
    return f


@pytest.fixture
def tiny_file(tmp_path):
    f = tmp_path / "tiny.txt"
    f.write_text("ab\nba\nabba\n\ncab\n", encoding="utf-8")
    return f


# (id, argv builder, env, what the one line must mention: a string, or a builder like argv's)
BAD_INPUTS = [
    ("no-command", lambda p: [], {}, "COMMAND"),
    ("missing-input", lambda p: ["train", "--input", str(p["tmp"] / "missing.txt")], {}, "missing.txt"),
    ("directory-input", lambda p: ["train", "--input", str(p["tmp"])], {}, lambda p: str(p["tmp"])),
    ("blank-lines-only", lambda p: ["train", "-i", str(p["blank"])], {}, "no non-blank lines"),
    ("not-utf8", lambda p: ["train", "--input", str(p["latin1"])], {}, "UTF-8"),
    ("n-embd-not-divisible", lambda p: ["train", "--n-embd", "10", "--n-head", "4"], {}, "divisible"),
    ("steps-0", lambda p: ["train", "--steps", "0"], {}, "--steps"),
    ("steps-negative", lambda p: ["train", "--steps", "-1"], {}, "--steps"),
    ("steps-not-a-number", lambda p: ["train", "--steps", "ten"], {}, "--steps"),
    ("n-layer-0", lambda p: ["train", "--n-layer", "0"], {}, "--n-layer"),
    ("n-embd-0", lambda p: ["train", "--n-embd", "0"], {}, "--n-embd"),
    ("n-head-0", lambda p: ["train", "--n-head", "0"], {}, "--n-head"),
    ("block-size-0", lambda p: ["train", "--block-size", "0"], {}, "--block-size"),
    ("temperature-0", lambda p: ["train", "--temperature", "0"], {}, "--temperature"),
    ("temperature-negative", lambda p: ["train", "--temperature", "-1"], {}, "--temperature"),
    ("temperature-nan", lambda p: ["train", "--temperature", "nan"], {}, "--temperature"),
    ("learning-rate-0", lambda p: ["train", "--learning-rate", "0"], {}, "--learning-rate"),
    ("engine-bogus", lambda p: ["train", "--engine", "bogus"], {}, "bogus"),
    ("engine-env-bogus", lambda p: ["train"], {"MICROGPT_ENGINE": "bogus"}, "bogus"),
    # root can write anywhere, so 'unwritable' is a path whose folder does not exist
    ("log-in-missing-folder", lambda p: ["train", "--log", str(p["tmp"] / "no" / "such" / "log.jsonl")], {},
     "log.jsonl"),
    ("log-is-a-directory", lambda p: ["train", "--log", str(p["tmp"])], {}, lambda p: str(p["tmp"])),
]


@pytest.mark.parametrize("case_id,argv,env,mentions", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_is_one_line_and_status_2(case_id, argv, env, mentions, tmp_path, blank_file, latin1_file,
                                             monkeypatch, capsys):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    paths = {"tmp": tmp_path, "blank": blank_file, "latin1": latin1_file}
    if callable(mentions):
        mentions = mentions(paths)
    status = main(argv(paths))
    out, err = capsys.readouterr()
    assert status == 2
    line = assert_one_error_line(err)
    assert mentions in line
    # every one of these is caught before training: no step line may have been printed
    assert "step " not in out


@pytest.mark.parametrize("args,mentions", [
    (["train", "--input", "/nonexistent/microgpt-test/missing.txt"], "missing.txt"),
    (["train", "--engine", "bogus", "--steps", "1"], "bogus"),
    (["train", "--n-embd", "10", "--n-head", "4", "--steps", "1"], "divisible"),
])
def test_bad_input_as_a_process_exits_2_without_traceback(args, mentions):
    proc = run_module(args)
    assert proc.returncode == 2
    line = assert_one_error_line(proc.stderr)
    assert mentions in line


def test_offline_without_cache_fails_with_one_line_suggesting_input(tmp_path, capsys, monkeypatch):
    # an empty cache and a download URL that nothing answers: as on a machine offline
    monkeypatch.setenv("MICROGPT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("no_proxy", "*")
    monkeypatch.setenv("NO_PROXY", "*")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MICROGPT_NAMES_URL", f"http://127.0.0.1:{port}/names.txt")
    assert main(["train", "--steps", "1"]) == 2
    line = assert_one_error_line(capsys.readouterr().err)
    assert "--input" in line


def help_entries(help_text):
    """{flag: its help text on one line}, from argparse's layout: an option's entry starts
    with a line indented by two spaces and a dash; its wrapped lines are indented deeper."""
    entries, current = {}, None
    for line in help_text.splitlines():
        if re.match(r"^  -", line):
            current = [line]
            invocation = line.strip().split("  ")[0]  # "-i FILE, --input FILE", before the help text
            for flag in re.findall(r"(?:^|, )(--?[\w-]+)", invocation):
                entries[flag] = current
        elif current is not None and line.startswith("   ") and line.strip():
            current.append(line)
        else:
            current = None
    return {flag: " ".join(" ".join(lines).split()) for flag, lines in entries.items()}


def test_train_help_shows_every_default():
    proc = run_module(["train", "--help"], COLUMNS="80")
    assert proc.returncode == 0, proc.stderr
    entries = help_entries(proc.stdout)
    expected = {"--steps": "1000", "--seed": "42", "--n-layer": "1", "--n-embd": "16", "--block-size": "16",
                "--n-head": "4", "--learning-rate": "0.01", "--temperature": "0.5", "--num-samples": "20"}
    for flag, default in expected.items():
        assert flag in entries, (flag, sorted(entries))
        assert f"(default: {default})" in entries[flag], entries[flag]
    for flag in ("--input", "-i", "--engine", "--log"):
        assert flag in entries, (flag, sorted(entries))


def test_help_says_what_auto_picks():
    from microgpt import get_engine
    from microgpt.engine import available_engines
    auto = get_engine("auto").name
    assert auto == ("replay" if "replay" in available_engines() else "pure")
    for command in ("train", "sample"):
        proc = run_module([command, "--help"], COLUMNS="80")
        assert proc.returncode == 0, proc.stderr
        assert "auto: replay when the compiled extension is built, else pure" in help_entries(proc.stdout)["--engine"]


def test_the_installed_package_names_its_licence():
    import importlib.metadata
    import pathlib
    meta = importlib.metadata.metadata("microgpt-arena")
    assert meta["License"] == "MIT"
    licence = pathlib.Path(__file__).resolve().parent.parent / "LICENSE"
    assert licence.read_text().startswith("MIT License")


def run_console_script(args, timeout=120):
    exe = shutil.which("microgpt")
    if exe is None:
        pytest.skip("the microgpt console script is not on PATH (package not installed)")
    return subprocess.run([exe, *args], capture_output=True, text=True, env=child_env(), timeout=timeout)


@pytest.mark.parametrize("entry_point", ["python -m microgpt", "console script"])
def test_entry_point_trains(entry_point, tiny_file):
    args = ["train", "--input", str(tiny_file), "--steps", "1", "--num-samples", "1", "--engine", "pure"]
    proc = run_module(args) if entry_point == "python -m microgpt" else run_console_script(args)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"^sample  1: ", proc.stdout, re.M)


def test_console_script_help_lists_every_command():
    proc = run_console_script(["--help"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: microgpt [-h] COMMAND ...")
    # each command on a line of its own, with its one-line description
    listed = re.findall(r"^    (\w+)\s+(\S.*)$", proc.stdout, re.M)
    assert [name for name, _ in listed] == ["train", "bench", "sample", "plot", "explain", "export"]
    assert all(len(text) > 10 for _, text in listed)


def test_tiny_own_text_run(tiny_file, capsys):
    status = main(["train", "--input", str(tiny_file), "--steps", "3", "--num-samples", "2", "--engine", "pure"])
    out, err = capsys.readouterr()
    assert status == 0, err
    lines = out.splitlines()
    docs = [line.strip() for line in tiny_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert f"num docs: {len(docs)}" in lines
    assert f"vocab size: {len(set(''.join(docs))) + 1}" in lines
    assert len([line for line in lines if line.startswith("step ")]) == 3
    samples = [line for line in lines if line.startswith("sample ")]
    assert [s[:10] for s in samples] == ["sample  1:", "sample  2:"]
    # a sample is made of the file's characters only
    alphabet = set("".join(docs))
    for s in samples:
        assert set(s[len("sample  1: "):]) <= alphabet
