"""Shared pytest setup: the package prepares the pip-installed toolchain itself."""

import os
from pathlib import Path

import pytest

from nms.gen.toolchain import setup_simulation_env

REPO = Path(__file__).resolve().parent.parent
#: Real Fashion-MNIST IDX files beside the repository (CI always has them: there a missing copy
#: fails the run; on a developer machine without them the full-set tests skip).
FASHION_DIR = REPO.parent / "shared" / "datasets" / "fashion-mnist"
#: A committed subset in the same format (tests/data/fashion-mnist-mini/README.md) for tests that
#: need real Fashion-MNIST images but not all 70 000.
FASHION_MINI_DIR = REPO / "tests" / "data" / "fashion-mnist-mini"

setup_simulation_env()


@pytest.fixture(scope="session")
def fashion_dir():
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        if os.environ.get("CI"):
            pytest.fail(f"CI without the full Fashion-MNIST at {FASHION_DIR}")
        pytest.skip(f"Fashion-MNIST not found at {FASHION_DIR}")
    return FASHION_DIR


@pytest.fixture(scope="session")
def fashion_mini_dir():
    return FASHION_MINI_DIR
