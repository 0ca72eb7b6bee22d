"""Choosing an engine: explicit name > $MICROGPT_ENGINE > auto (replay when built, else pure)."""
import pytest

import microgpt
import microgpt.engine
from microgpt import available_engines, get_engine
from microgpt import EngineError
from microgpt.cli import main

HAS_COMPILED = "compiled" in available_engines()
needs_compiled = pytest.mark.skipif(not HAS_COMPILED, reason="the compiled engine is not built here")


def check_interface(eng):
    """The interface engine.py promises, used: Value, graph(), backward, Adam."""
    with eng.graph():
        a = eng.Value(3.0)
        b = a * a + 1
        b.backward()
        assert (b.data, a.grad) == (10.0, 6.0)
    p = eng.Value(1.0)
    p.grad = 0.5
    eng.Adam([p], beta1=0.85, beta2=0.99, eps=1e-8).step(0.01, 0)
    m_hat = ((1 - 0.85) * 0.5) / (1 - 0.85)  # the reference's first step, written out
    v_hat = ((1 - 0.99) * 0.5 ** 2) / (1 - 0.99)
    assert p.data == 1.0 - 0.01 * m_hat / (v_hat ** 0.5 + 1e-8)
    assert p.grad == 0


@pytest.mark.parametrize("name", ["pure", pytest.param("compiled", marks=needs_compiled),
                                  pytest.param("replay", marks=needs_compiled)])
def test_engine_by_name(name):
    eng = get_engine(name)
    assert eng.name == name
    check_interface(eng)


def test_available_engines_lists_pure_first():
    names = available_engines()
    assert names[0] == "pure"
    assert set(names) <= {"pure", "compiled", "replay"}
    assert ("compiled" in names) == microgpt.engine.compiled_available()
    for name in names:
        assert get_engine(name).name == name


@needs_compiled
def test_auto_picks_replay_when_built():
    assert get_engine("auto").name == "replay"
    assert get_engine().name == "replay"  # no name, no environment: auto
    assert get_engine(None).name == "replay"


@pytest.mark.parametrize("name", available_engines())
def test_environment_variable_chooses(monkeypatch, name):
    monkeypatch.setenv("MICROGPT_ENGINE", name)
    assert get_engine().name == name
    assert get_engine(None).name == name


@pytest.mark.parametrize("env", ["pure", "compiled", "auto", "bogus"])
@pytest.mark.parametrize("name", available_engines())
def test_explicit_name_wins_over_environment(monkeypatch, env, name):
    monkeypatch.setenv("MICROGPT_ENGINE", env)
    assert get_engine(name).name == name


def test_empty_environment_variable_means_auto(monkeypatch):
    monkeypatch.setenv("MICROGPT_ENGINE", "")
    assert get_engine().name == get_engine("auto").name


@pytest.mark.parametrize("bad", ["bogus", "c", "pypy", "compiled2"])
def test_unknown_name_raises(monkeypatch, bad):
    with pytest.raises(EngineError) as info:
        get_engine(bad)
    assert bad in str(info.value)
    assert "\n" not in str(info.value)  # one line
    monkeypatch.setenv("MICROGPT_ENGINE", bad)
    with pytest.raises(EngineError):
        get_engine()


@pytest.fixture
def without_compiled(monkeypatch):
    """Pretend the extension was not built."""
    monkeypatch.setattr(microgpt.engine, "_import_compiled", lambda: None)


def test_compiled_missing_raises_for_compiled(without_compiled, monkeypatch):
    assert not microgpt.engine.compiled_available()
    assert available_engines() == ["pure"]
    with pytest.raises(EngineError) as info:
        get_engine("compiled")
    assert "compiled" in str(info.value) and "\n" not in str(info.value)
    monkeypatch.setenv("MICROGPT_ENGINE", "compiled")
    with pytest.raises(EngineError):
        get_engine()


def test_compiled_missing_auto_falls_back_to_pure(without_compiled):
    assert get_engine("auto").name == "pure"
    assert get_engine().name == "pure"
    assert get_engine("pure").name == "pure"


# ---------------------------------------------------------------- the CLI says which engine runs

def first_stdout_line(capsys, argv):
    status = main(argv)
    out = capsys.readouterr().out
    assert status in (0, None), out
    return out.splitlines()[0]


TRAIN = ["train", "--steps", "1", "--num-samples", "0"]


@pytest.mark.parametrize("name", available_engines())
def test_cli_prints_the_engine_first(capsys, name):
    assert first_stdout_line(capsys, TRAIN + ["--engine", name]) == f"engine: {name}"


def test_cli_auto_prints_the_engine_it_picked(capsys):
    assert first_stdout_line(capsys, TRAIN + ["--engine", "auto"]) == f"engine: {get_engine('auto').name}"
    assert first_stdout_line(capsys, TRAIN) == f"engine: {get_engine('auto').name}"


@pytest.mark.parametrize("name", available_engines())
def test_cli_flag_wins_over_environment(capsys, monkeypatch, name):
    other = "compiled" if name == "pure" else "pure"
    monkeypatch.setenv("MICROGPT_ENGINE", other)
    assert first_stdout_line(capsys, TRAIN + ["--engine", name]) == f"engine: {name}"
    if other in available_engines():
        assert first_stdout_line(capsys, TRAIN) == f"engine: {other}"  # no flag: the environment


def test_cli_compiled_missing_fails_with_one_line(capsys, without_compiled):
    status = main(TRAIN + ["--engine", "compiled"])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    err = captured.err.strip()
    assert "\n" not in err and "compiled" in err
