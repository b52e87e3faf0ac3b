"""vosjax.tools.pack_davis: a small DAVIS-layout copy of chosen sequences."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from vosjax import davis_io
from vosjax.data import synthetic
from vosjax.errors import InputError
from vosjax.tools import pack_davis


@pytest.fixture(scope="module", params=[2016, 2017])
def source(request, tmp_path_factory):
  root = tmp_path_factory.mktemp(f"davis{request.param}")
  names = synthetic.generate(root, year=request.param, num_frames=3,
                             height=24, width=40, num_objects=2,
                             splits=(("train", 2), ("val", 2)))
  return request.param, root, names


def test_pack_keeps_names_ids_palette_and_lists(source, tmp_path):
  """Reference: the source files themselves. Frames are half size; each
  mask is the source mask sampled at odd pixels (PIL's nearest neighbour
  maps output pixel i to source pixel centre (i + 0.5) * 2, i.e. 2 i + 1),
  with the same PNG mode and palette; the split lists keep exactly the
  packed sequences' lines, in order."""
  year, root, names = source
  chosen = [names["train"][1], names["val"][0]]
  out = tmp_path / "pack"
  size = pack_davis.pack(root, out, chosen, scale=0.5)
  assert size == sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
  assert sorted(p.name for p in (out / "JPEGImages" / "480p").iterdir()
                ) == sorted(chosen)
  for seq in chosen:
    src_frames = davis_io.frame_paths(root, seq)
    got_frames = davis_io.frame_paths(out, seq)
    assert [p.name for p in got_frames] == [p.name for p in src_frames]
    assert davis_io.read_frame(got_frames[0]).shape == (12, 20, 3)
    for src, got in zip(davis_io.mask_paths(root, seq),
                        davis_io.mask_paths(out, seq)):
      assert got.name == src.name
      with Image.open(src) as a, Image.open(got) as b:
        assert b.mode == a.mode and b.getpalette() == a.getpalette()
      np.testing.assert_array_equal(davis_io.read_mask(got),
                                    davis_io.read_mask(src)[1::2, 1::2])
  for split in ("train", "val"):
    want = [s for s in davis_io.read_split(root, split, year) if s in chosen]
    assert davis_io.read_split(out, split, year) == want
  assert not list(tmp_path.glob(".pack.*"))  # the temporary folder is gone


def test_over_the_limit_writes_nothing(source, tmp_path):
  _, root, names = source
  out = tmp_path / "pack"
  with pytest.raises(InputError, match="would exceed --max_mib"):
    pack_davis.pack(root, out, names["val"], scale=1.0, max_mib=0.001)
  assert not out.exists() and not list(tmp_path.iterdir())


def test_refusals_are_one_line(source, tmp_path):
  _, root, names = source
  (tmp_path / "full").mkdir()
  (tmp_path / "full" / "x").write_text("x")
  with pytest.raises(InputError, match="not an empty folder"):
    pack_davis.pack(root, tmp_path / "full", names["val"])
  with pytest.raises(InputError):
    pack_davis.pack(root, tmp_path / "a", ["no-such-sequence"])
  assert pack_davis.main(["--out", str(tmp_path / "b"), "--sequences",
                          names["val"][0], "--data_dir", str(root),
                          "--scale", "0"]) == 1
  assert pack_davis.main(["--out", str(tmp_path / "c"), "--sequences",
                          names["val"][0], "--data_dir", str(root)]) == 0
  assert (pathlib.Path(tmp_path / "c") / "JPEGImages").is_dir()
