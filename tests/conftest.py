"""Test session set-up: 8 simulated CPU devices (for the 1-vs-8 device tests) and the shared data dir.

XLA_FLAGS must be set before jax initializes its backend, so this happens at import time of the
conftest, before any test module imports jax.
"""
import os
import pathlib

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()

# the CLI and the runner keep compiled programs in the user's cache directory; tests never write there
os.environ["ADVJAX_COMPILATION_CACHE"] = "0"

import pytest  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("ADVJAX_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> pathlib.Path:
    """The directory of real datasets (../shared/data); tests needing it skip if it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data directory {SHARED_DATA} not found (set ADVJAX_SHARED_DATA)")
    return SHARED_DATA
