"""Test set-up shared by the whole suite.

Every test sees 8 host CPU devices so multi-device code paths (meshes, sharded
batches) run without an accelerator. XLA reads the flag once, when jax is first
imported, so it is set here before anything imports jax.
"""

import atexit
import os
import pathlib
import shutil
import tempfile

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""),
     "--xla_force_host_platform_device_count=8"]).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# run.py keeps JAX's compilation cache under $XDG_CACHE_HOME: the runs tests
# start (and notebooks) write to a fresh folder, not the user's cache.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="vosjax-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], True)

from vosjax import xla_flags  # pylint: disable=g-import-not-at-top

# JAX's persistent compilation cache, one folder per test process, set as
# run.py sets it: tests that build the same programs (a method's run and
# its segment_video API, the same tiny model in several tests) load them
# instead of compiling them again (tests/test_segment_video.py: 106 s ->
# 82 s).
xla_flags.configure_compilation_cache(
    os.path.join(os.environ["XDG_CACHE_HOME"], "jax"))

import pytest  # pylint: disable=g-import-not-at-top

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Read-only shared data beside the project root (DAVIS 2016, Kinetics sample).
SHARED_DATA = pathlib.Path(
    os.environ.get("VOSJAX_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def davis_root():
  """The official DAVIS 2016 folder in ../shared/data; skips when absent."""
  root = SHARED_DATA / "DAVIS"
  if not (root / "JPEGImages" / "480p").is_dir():
    pytest.skip(f"DAVIS data not found at {root}")
  return root


@pytest.fixture(scope="session")
def kinetics_sample_dir():
  """DeepMind's kinetics-i3d sample in ../shared/data; skips when absent."""
  root = SHARED_DATA / "kinetics_i3d_sample"
  if not root.is_dir():
    pytest.skip(f"Kinetics I3D sample not found at {root}")
  return root
