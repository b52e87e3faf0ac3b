"""Training clips from DAVIS-format sequences, as sharded, restartable batches.

Sources are random-access collections of whole sequences (`len(source)`,
`source[i]`), each record a dict:

  frames:      [N, H, W, 3] uint8 RGB
  masks:       [N, H, W] uint8 object ids (0 = background, 255 = void)
  name:        str
  num_objects: int

  DavisFolderSource(root, split='train', *, year=2016, resolution='480p',
                    sequences=None, in_memory=False)
      an extracted DAVIS folder (or one written by `vosjax.data.synthetic`), read
      with `vosjax.davis_io`; 2016 masks become 0/1. Training reads only the
      clip's frames.
  TfdsSource(data_source, *, in_memory=False)
      `builder.as_data_source(split)` of `vosjax.data.davis_tfds.Davis2016` / `Davis2017`.
  ArraySource(records)
      records already in memory.

Usage:

  source = DavisFolderSource(root, 'train', in_memory=True)
  ds = make_dataset(source, global_batch_size=8, clip_length=8,
                    crop_size=(224, 224), seed=0)
  it = iter(ds)
  batch = shard_batch(next(it), mesh)      # global jax.Arrays
  state = it.get_state()                   # JSON-serialisable; later:
  it = iter(ds); it.set_state(state)       # resumes with the next batch

`make_dataset(source, ...)` samples one clip of `clip_length` frames per
visited sequence (sequences reshuffled every epoch), augments it identically
over time (scale jitter, a crop of `crop_size` whose first frame holds more
than `min_foreground` foreground, a horizontal flip) and batches it. Each
element of a batch:

  frames:   [B, T, h, w, 3] float32 in [-1, 1] (x / 127.5 - 1, the I3D input
            range)
  labels:   [B, T, h, w] float32 in {0, 1}: any object id > 0 except void
            (void pixels are 0 here; mask them with `ids == 255`)
  ids:      [B, T, h, w] uint8 object ids as stored (255 = void)
  sequence: [B] int32 index of the sequence in the source
  start:    [B] int32 first frame of the clip

Everything is a pure function of `seed` and the element's position, so the
same seed gives the same batches, and `iterator.get_state()` (a small
JSON-serialisable dict; `set_state` restores it) resumes exactly. With
several processes (multi-host) each takes every `process_count`-th clip and
makes a per-process batch of `global_batch_size // process_count`;
`shard_batch(batch, mesh)` assembles global `jax.Array`s sharded over the
mesh's 'data' axis.
"""

import grain
import jax
import numpy as np
import cv2

from vosjax import davis_io
from vosjax.augment.crops import choose_crop


class ArraySource:
  """Sequences already in memory: a list of records (see module docstring)."""

  def __init__(self, records):
    self._records = list(records)
    for r in self._records:
      _check_record(r)

  def __len__(self):
    return len(self._records)

  def __getitem__(self, index):
    return self._records[index]


class DavisFolderSource:
  """Whole sequences read from a DAVIS folder with `vosjax.davis_io`.

  Args:
    root: the folder holding JPEGImages/, Annotations/ and ImageSets/.
    split: split name, read with `davis_io.read_split`.
    year: 2016 (masks binarised to 0/1) or 2017 (ids kept, 255 = void).
    resolution: '480p' or 'Full-Resolution'.
    sequences: if given, exactly these sequences instead of the split's.
    in_memory: decode every sequence once at construction (small data, e.g.
      the synthetic demo) instead of on every visit.
  """

  def __init__(self, root, split="train", *, year=2016, resolution="480p",
               sequences=None, in_memory=False):
    self.root, self.year, self.resolution = root, year, resolution
    self.names = list(sequences) if sequences is not None else (
        davis_io.read_split(root, split, year))
    if not self.names:
      raise davis_io.DavisFormatError(f"no sequences for split {split!r} in "
                                      f"{root}")
    self._paths = {}
    self._cache = [self._read(i) for i in range(len(self.names))
                   ] if in_memory else None

  def __len__(self):
    return len(self.names)

  def __getitem__(self, index):
    return self._cache[index] if self._cache is not None else self._read(index)

  def num_frames(self, index):
    return len(self._files(index)[0])

  def read_clip(self, index, frame_indices):
    """`(frames [T, H, W, 3], ids [T, H, W])` of chosen frames only."""
    if self._cache is not None:
      record = self._cache[index]
      return record["frames"][frame_indices], record["masks"][frame_indices]
    frames, masks = self._files(index)
    return (np.stack([davis_io.read_frame(frames[i]) for i in frame_indices]),
            np.stack([davis_io.to_object_ids(davis_io.read_mask(masks[i]),
                                             self.year)
                      for i in frame_indices]))

  def _files(self, index):
    if index not in self._paths:
      name = self.names[index]
      frames = davis_io.frame_paths(self.root, name, self.resolution)
      masks = davis_io.mask_paths(self.root, name, self.resolution)
      if len(frames) != len(masks):
        raise davis_io.DavisFormatError(
            f"sequence {name} in {self.root}: {len(frames)} frames but "
            f"{len(masks)} masks")
      self._paths[index] = (frames, masks)
    return self._paths[index]

  def _read(self, index):
    frames, masks = self._files(index)
    ids = np.stack([davis_io.to_object_ids(davis_io.read_mask(p), self.year)
                    for p in masks])
    record = {"frames": np.stack([davis_io.read_frame(p) for p in frames]),
              "masks": ids, "name": self.names[index],
              "num_objects": int(np.max(np.where(ids == davis_io.VOID_LABEL,
                                                 0, ids)))}
    _check_record(record)
    return record


class TfdsSource:
  """Records from a tfds data source (`builder.as_data_source(split)`).

  Every access decodes the whole sequence (one tfds example per sequence;
  about 20 ms per 480p frame); `in_memory=True` decodes each sequence once, at
  construction, for data that fits in memory.
  """

  def __init__(self, data_source, *, in_memory=False):
    self._source = data_source
    self._cache = [self._read(i) for i in range(len(data_source))
                   ] if in_memory else None

  def __len__(self):
    return len(self._source)

  def __getitem__(self, index):
    return self._cache[index] if self._cache is not None else self._read(index)

  def num_frames(self, index):
    return int(self[index]["frames"].shape[0])

  def read_clip(self, index, frame_indices):
    """`(frames [T, H, W, 3], ids [T, H, W])` of chosen frames."""
    record = self[index]
    return record["frames"][frame_indices], record["masks"][frame_indices]

  def _read(self, index):
    ex = self._source[index]
    # tfds decodes a Sequence of images to a list of [H, W, C] arrays.
    masks = np.stack(ex["masks"])
    name = ex["name"]
    return {"frames": np.stack(ex["frames"]),
            "masks": masks[..., 0] if masks.ndim == 4 else masks,
            "name": name.decode() if isinstance(name, bytes) else str(name),
            "num_objects": int(ex["num_objects"])}


def _check_record(r):
  f, m = r["frames"], r["masks"]
  if f.ndim != 4 or f.shape[-1] != 3 or m.shape != f.shape[:3]:
    raise ValueError(f"sequence {r.get('name')}: frames {f.shape} and masks "
                     f"{m.shape} are not [N, H, W, 3] and [N, H, W]")


def foreground(ids):
  """Binary foreground of object ids: id > 0 and not void."""
  return (ids > 0) & (ids != davis_io.VOID_LABEL)


def augment_clip(frames, ids, rng, *, crop_size, scale_range=(0.8, 1.25),
                 flip=True, min_foreground=0.1, rotation=0.0):
  """One random scale, crop and flip applied to every frame of a clip.

  Args:
    frames: `[T, H, W, 3]` uint8.
    ids: `[T, H, W]` uint8 object ids.
    rng: `np.random.Generator`.
    crop_size: `(h, w)` output size.
    scale_range: `(lo, hi)`: the clip is resized by a factor drawn uniformly
      in it (raised as needed so the crop fits).
    flip: flip horizontally with probability 1/2.
    min_foreground: see `choose_crop`.
    rotation: if > 0, the clip is first rotated about its centre by an angle
      drawn uniformly in [-rotation, rotation] degrees, uncovered corners
      black and background (OSVOS-PyTorch's ScaleNRotate: cv2.warpAffine
      with a constant zero border). At 0 nothing is drawn, so streams
      without rotation are unchanged.

  Returns:
    frames `[T, h, w, 3]` uint8 and ids `[T, h, w]` uint8.
  """
  _, height, width, _ = frames.shape
  if rotation > 0:
    angle = rng.uniform(-rotation, rotation)
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2),
                                     angle, 1.0)
    frames = np.stack([cv2.warpAffine(f, matrix, (width, height),
                                      flags=cv2.INTER_LINEAR)
                       for f in frames])
    ids = np.stack([cv2.warpAffine(m, matrix, (width, height),
                                   flags=cv2.INTER_NEAREST) for m in ids])
  ch, cw = crop_size
  scale = max(rng.uniform(*scale_range), ch / height, cw / width)
  new_h = max(ch, int(round(height * scale)))
  new_w = max(cw, int(round(width * scale)))
  if (new_h, new_w) != (height, width):
    frames = np.stack([cv2.resize(f, (new_w, new_h),
                                  interpolation=cv2.INTER_LINEAR)
                       for f in frames])
    # Nearest neighbour keeps ids as ids; the EXACT variant samples pixel
    # centres like INTER_LINEAR (plain INTER_NEAREST is shifted by a half
    # pixel), so masks stay aligned with frames.
    ids = np.stack([cv2.resize(m, (new_w, new_h),
                               interpolation=cv2.INTER_NEAREST_EXACT)
                    for m in ids])
  top, left = choose_crop(foreground(ids[0]), (ch, cw), rng, min_foreground)
  frames = frames[:, top:top + ch, left:left + cw]
  ids = ids[:, top:top + ch, left:left + cw]
  if flip and rng.uniform() < 0.5:
    frames, ids = frames[:, :, ::-1], ids[:, :, ::-1]
  return np.ascontiguousarray(frames), np.ascontiguousarray(ids)


def clip_indices(num_frames, rng, *, clip_length, stride=1):
  """`(frame indices [T], start)` of a random clip of a sequence.

  The start is uniform over the clips that fit; sequences shorter than the
  clip repeat their last frame.
  """
  span = (clip_length - 1) * stride + 1
  start = int(rng.integers(0, max(num_frames - span, 0) + 1))
  index = np.minimum(start + stride * np.arange(clip_length), num_frames - 1)
  return index, start


def make_dataset(source, *, global_batch_size, clip_length, crop_size, seed,
                 scale_range=(0.8, 1.25), flip=True, min_foreground=0.1,
                 rotation=0.0, stride=1, num_epochs=None, process_index=None,
                 process_count=None, num_threads=2, prefetch=4):
  """A grain `IterDataset` of augmented clip batches (module docstring).

  Args:
    source: random-access sequences (`ArraySource`, `DavisFolderSource`,
      `TfdsSource`); a source with `num_frames(i)` and `read_clip(i,
      frame_indices)` (`DavisFolderSource`) is asked for the clip's frames
      only.
    global_batch_size: clips per step over all processes; divisible by the
      process count.
    clip_length: T frames per clip.
    crop_size: int or `(h, w)`.
    seed: the whole stream (shuffle order, clip starts, augmentation) is a
      pure function of it.
    scale_range, flip, min_foreground, rotation: see `augment_clip`.
    stride: temporal stride between clip frames.
    num_epochs: passes over the sequences; None repeats forever.
    process_index, process_count: default to `jax.process_index()` and
      `jax.process_count()`.
    num_threads, prefetch: grain read threads and buffer (elements).

  Returns:
    `grain.IterDataset`; `iter()` of it has `get_state()` / `set_state()`.
  """
  pi = jax.process_index() if process_index is None else process_index
  pc = jax.process_count() if process_count is None else process_count
  if global_batch_size % pc:
    raise ValueError(f"global_batch_size {global_batch_size} is not divisible "
                     f"by the {pc} processes")
  crop_size = (crop_size, crop_size) if np.isscalar(crop_size) else tuple(
      crop_size)

  def make_example(index, rng):
    if hasattr(source, "read_clip"):  # Reads only the clip's frames.
      frame_index, start = clip_indices(source.num_frames(index), rng,
                                        clip_length=clip_length, stride=stride)
      frames, ids = source.read_clip(index, frame_index)
    else:
      record = source[index]
      frame_index, start = clip_indices(record["frames"].shape[0], rng,
                                        clip_length=clip_length, stride=stride)
      frames, ids = record["frames"][frame_index], record["masks"][frame_index]
    frames, ids = augment_clip(frames, ids, rng, crop_size=crop_size,
                               scale_range=scale_range, flip=flip,
                               min_foreground=min_foreground,
                               rotation=rotation)
    return {"frames": frames.astype(np.float32) / 127.5 - 1.0,
            "labels": foreground(ids).astype(np.float32),
            "ids": ids,
            "sequence": np.int32(index),
            "start": np.int32(start)}

  ds = grain.MapDataset.range(len(source)).shuffle(seed=seed)
  ds = ds.repeat(num_epochs)  # Reshuffled every epoch.
  # Randomness is keyed on the global position, before sharding, so the
  # processes together produce exactly the single-process stream.
  ds = ds.random_map(make_example, seed=seed)
  # Every process takes a disjoint, interleaved share (maps are lazy: only
  # its own clips are read and augmented).
  ds = ds.slice(slice(pi, None, pc))
  ds = ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                            prefetch_buffer_size=prefetch))
  return ds.batch(global_batch_size // pc, drop_remainder=True)


class KeepKeys:
  """A checkpointable batch iterator keeping only the arrays a step consumes.

  Dropping the rest (`ids`, `sequence`, `start`) keeps them off the device.
  """

  def __init__(self, iterator, keys):
    self._it, self._keys = iterator, tuple(keys)

  def __iter__(self):
    return self

  def __next__(self):
    batch = next(self._it)
    return {k: batch[k] for k in self._keys}

  def get_state(self):
    return self._it.get_state()

  def set_state(self, state):
    self._it.set_state(state)
