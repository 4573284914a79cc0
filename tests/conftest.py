"""Shared test fixtures.

- Every test gets its own empty ``$NCLAB_CACHE`` (a temp dir), so no test reads or fills the user's cache,
  unless it is marked ``@pytest.mark.persistent_cache`` (then the real ``$NCLAB_CACHE``/~/.cache/nclab is used).
- ``cifar_jpeg``: path of the shared CIFAR-10 JPEG copy (``../shared/datasets/cifar10-jpeg.tar.gz`` relative to
  the repository root); the test is skipped where it is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO_ROOT.parent / "shared" / "datasets"
CIFAR_JPEG = SHARED_DATASETS / "cifar10-jpeg.tar.gz"


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "persistent_cache: use the real $NCLAB_CACHE instead of a per-test temp dir")


@pytest.fixture(autouse=True)
def _data_folder(monkeypatch):
    """The shipped configs read ``$NCLAB_DATA/cifar10-jpeg.tar.gz``: point it at the shared copy's folder."""
    import os

    if not os.environ.get("NCLAB_DATA") and SHARED_DATASETS.is_dir():
        monkeypatch.setenv("NCLAB_DATA", str(SHARED_DATASETS))


@pytest.fixture(autouse=True)
def _isolated_nclab_cache(request, tmp_path_factory, monkeypatch):
    if request.node.get_closest_marker("persistent_cache") is None:
        monkeypatch.setenv("NCLAB_CACHE", str(tmp_path_factory.mktemp("nclab-cache")))


@pytest.fixture(scope="package")
def cifar_jpeg() -> Path:
    if not CIFAR_JPEG.is_file():
        pytest.skip(f"shared CIFAR-10 copy not found at {CIFAR_JPEG}")
    return CIFAR_JPEG


@pytest.fixture(autouse=True)
def _reset_quiet():
    """``nclab.cli.main(['...', '--json'])`` sets the process-wide quiet flag; keep tests independent of order."""
    from nclab.utils import progress

    progress.set_quiet(False)  # also after a module- or package-scoped fixture that ran a command with --quiet
    yield
    progress.set_quiet(False)
