"""The tests' fixtures: the names data set in a private cache for every test (the engine
parametrization and the session checks come from tests/shared_fixtures.py)."""
import shutil

import pytest

pytest_plugins = ["shared_fixtures"]  # tests/shared_fixtures.py: session checks, names_txt, engine


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
