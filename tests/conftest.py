"""Test set-up shared by the whole suite.

Every test sees 4 host CPU devices so multi-device code paths (meshes, sharded
batches) run without an accelerator. XLA reads the flag once, when jax is first
imported, so it is set here before anything imports jax.

Four, not eight: with 8 host devices every computation ran slower on the
2 cores, even one on a single device (the real-video tests, run alone,
2026-12-07: OSVOS 51-54 s against 38-49 s with 1, 2 or 4 devices, FC-I3D
68-77 s against 57-65 s with 1), and 4 still leave a mesh that is not the
whole host, a sharded batch and an odd sequence count per device.
"""

import atexit
import os
import pathlib
import shutil
import tempfile

os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""),
     "--xla_force_host_platform_device_count=4"]).strip()
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


# The files that take longest on 2 cores (seconds of test time in the
# suite, 2026-12-07), started first: the two workers take files in this
# order (`--no-loadscope-reorder`, pytest.ini), so the long ones do not
# start last and leave one core idle at the end (xdist's own order, by
# number of tests, put them there; the suite took 675 s before, 606, 611
# and 650 s in three runs after, this VM's speed drifting by 10%; with 4
# host devices instead of 8, 536 s). Per file, with 4 host devices:
LONGEST_FIRST = (
    "test_fc_i3d_program.py",  # ~145 s: real video, CI-sized parent.
    "test_masktrack_program.py",  # ~110 s
    "test_osvos_program.py",  # ~110 s
    "test_pml_program.py",  # ~95 s
    "test_accelerator_report.py",  # ~70 s, one subprocess.
    "test_run.py",  # ~45 s of subprocesses.
    "test_pml_models.py",
    "test_segment_video.py",
    "test_fc_i3d.py",
    "test_finetune.py",
    "test_osvos.py",
    "test_colabs.py",
    "test_vgg.py",
)


def pytest_collection_modifyitems(items):
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  # Stable: within a file, and for the other files, collection order.
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
