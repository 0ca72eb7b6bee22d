"""Shared fixtures: the engine parametrization and the names data set, in a private cache."""
import shutil

import pytest
from support import compiled_engine_problem, find_names_txt

from microgpt import available_engines, get_engine


NAMES_TXT = None


def pytest_configure(config):
    """Stop at once, with one line, where the tests cannot mean anything: a source checkout
    whose extension is not built (every compiled-engine test would be skipped in silence),
    or no names data set (every test reads it through the cache)."""
    global NAMES_TXT
    NAMES_TXT, problem = find_names_txt()
    problem = compiled_engine_problem() or problem
    if problem:
        raise pytest.UsageError(problem)


@pytest.fixture(params=available_engines())
def engine(request):
    """Every engine built here: the same test runs on pure and on compiled."""
    return get_engine(request.param)


@pytest.fixture(scope="session")
def names_txt():
    return NAMES_TXT


@pytest.fixture(scope="session")
def names_cache(tmp_path_factory, names_txt):
    """A cache directory holding names.txt, so nothing downloads."""
    d = tmp_path_factory.mktemp("cache")
    shutil.copy(names_txt, d / "names.txt")
    return d


@pytest.fixture(autouse=True)
def _isolated_cache(monkeypatch, names_cache):
    # every test sees a cache with the names data and no stray engine choice
    monkeypatch.setenv("MICROGPT_CACHE_DIR", str(names_cache))
    monkeypatch.delenv("MICROGPT_ENGINE", raising=False)
    monkeypatch.delenv("MICROGPT_NAMES_URL", raising=False)
