"""The C sources compile where the AVX2 kernels are not built (lanes.h defines
HAVE_AVX2 on x86-64 with GCC or Clang only: an aarch64 machine takes the plain
kernels). A file that names an _avx2 kernel outside #ifdef HAVE_AVX2 fails to
compile there, and the package then installs with the pure engine only."""
import pathlib
import shutil
import subprocess
import sysconfig

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
GCC = shutil.which("gcc")


@pytest.mark.skipif(GCC is None, reason="no gcc here")
def test_the_tape_compiles_without_the_avx2_kernels(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(ROOT / "src", src)
    lanes = src / "tape" / "lanes.h"
    text = lanes.read_text()
    assert "#define HAVE_AVX2 1" in text
    lanes.write_text(text.replace("#define HAVE_AVX2 1", "/* (as on a machine without AVX2 kernels) */"))
    failed = {}
    for c in sorted((src / "tape").glob("*.c")):
        run = subprocess.run([GCC, "-std=c99", "-fsyntax-only", "-I", str(src), "-I", str(src / "tape"),
                              "-I", sysconfig.get_paths()["include"], str(c)], capture_output=True, text=True)
        if run.returncode != 0:
            failed[c.name] = run.stderr.splitlines()[0]
    assert failed == {}
