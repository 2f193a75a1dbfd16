"""Where the public test data vendored in the repository lives: `testdata/`
at its root (origins and licences in `testdata/ORIGIN.md`). The Python
suites (tests/api, tests/deploy, tests/web) find it here; their conftest.py
puts this folder on sys.path."""

from __future__ import annotations

from pathlib import Path


def fixtures() -> Path:
    """The test data folder. A missing folder (a partial checkout) fails the
    test loudly rather than passing by skipping."""
    root = Path(__file__).resolve().parents[1] / "testdata"
    assert (root / "ORIGIN.md").is_file(), f"test data missing at {root}"
    return root
