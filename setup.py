"""The extension list: microgpt._engine, from microgpt/_engine.pyx, src/*.c and src/tape/*.c.

The build is optional: where no C compiler (or no Cython) is at hand the
package installs with the pure engine only and says so.
"""
import glob
import os
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

# Cython directives, set once here. MICROGPT_BOUNDSCHECK=1 builds a checked
# extension to run the test suite against: Cython's bounds, wraparound and None
# checks, and the asserts in src/ (every child and root index inside the arena).
CHECKED = os.environ.get("MICROGPT_BOUNDSCHECK") == "1"
DIRECTIVES = {
    "language_level": 3,
    "boundscheck": CHECKED,
    "wraparound": CHECKED,
    "initializedcheck": CHECKED,
    "nonecheck": CHECKED,
    "cdivision": True,
    "embedsignature": True,
}
# IEEE doubles exactly as written: no fused multiply-add, no reassociation, and
# pow() always called: gcc otherwise folds pow(g, 2.0) into g * g, which is not
# always the same double as the library pow that Python's ** calls.
CFLAGS = ["-O3", "-std=c99", "-ffp-contract=off", "-fno-fast-math", "-fno-builtin-pow", "-fno-math-errno"]

WARNING = """
*** microgpt: the compiled engine could not be built ({reason}).
*** It installs with the pure-Python engine only (the same results, much slower).
*** Install a C compiler and reinstall for the compiled engine.
"""


class OptionalBuildExt(build_ext):
    """Build the extension if possible; otherwise warn and install without it."""

    def run(self):
        try:
            super().run()
        except Exception as e:  # no compiler at all
            self._skip(e)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:  # compiler present but the build failed
            self._skip(e)

    def _skip(self, error):
        sys.stderr.write(WARNING.format(reason=str(error).strip().splitlines()[0] if str(error) else type(error).__name__))
        self.extensions = []


def extensions():
    try:
        from Cython.Build import cythonize
    except ImportError as e:
        sys.stderr.write(WARNING.format(reason=f"Cython is missing: {e}"))
        return []
    from setuptools import Extension
    if not os.path.exists("microgpt/_engine.pyx"):
        return []
    ext = Extension(
        "microgpt._engine",
        sources=["microgpt/_engine.pyx"] + sorted(glob.glob("src/*.c")) + sorted(glob.glob("src/tape/*.c")),
        include_dirs=["src"],
        extra_compile_args=CFLAGS + (["-UNDEBUG"] if CHECKED else []),  # C asserts on
        define_macros=[("MICROGPT_CHECKED", "1" if CHECKED else "0")],
        libraries=[] if sys.platform == "win32" else ["m"],
    )
    return cythonize([ext], compiler_directives=DIRECTIVES, quiet=True)


setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
