"""Shared pytest setup: the package prepares the pip-installed toolchain itself."""

from pathlib import Path

import pytest

from nms.gen.toolchain import setup_simulation_env

REPO = Path(__file__).resolve().parent.parent
#: Real Fashion-MNIST IDX files beside the repository (tests using them skip cleanly if absent).
FASHION_DIR = REPO.parent / "shared" / "datasets" / "fashion-mnist"

setup_simulation_env()


@pytest.fixture(scope="session")
def fashion_dir():
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST not found at {FASHION_DIR}")
    return FASHION_DIR
