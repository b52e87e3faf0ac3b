"""Deterministic synthetic videos in the official DAVIS folder layout.

The data of the embedded demo and of most tests: small, fast to write, and
hard enough that copying the first-frame mask to every frame scores a low IoU.

Each sequence is rendered by `render_sequence`:

  * background: smooth random colour texture, larger than the frame, seen
    through a window that pans (camera motion);
  * 1..N objects: star-convex blobs whose radius profile (a few angular
    harmonics) changes over time (deformation), that grow/shrink, move fast
    along bouncing straight lines and carry their own texture with them;
    objects are depth-ordered, so a nearer object hides the farther ones;
  * one unlabelled occluder (a textured background blob) that crosses the
    scene in front of everything, so parts of objects vanish from the masks.

Public API:

  render_sequence(rng, num_frames, height, width, num_objects)
      -> frames [T, H, W, 3] uint8, ids [T, H, W] uint8 (0 = background,
         1..num_objects = objects; an id can vanish in some frames).
  generate(root, *, year=2016, splits=(('train', 4), ('val', 2)),
           num_frames=12, height=96, width=160, num_objects=1, seed=0)
      -> {split: [sequence names]}; writes under root:
      JPEGImages/480p/<seq>/%05d.jpg, Annotations/480p/<seq>/%05d.png,
      ImageSets/480p/<split>.txt (2016: '/JPEGImages/... /Annotations/... '
      path pairs with the official trailing space) or ImageSets/2017/<split>.txt
      (2017: one name a line), and Annotations/db_info.yml.

2016 masks are grayscale {0, 255} PNGs like the official package (several
objects are merged into the single foreground); 2017 masks are palette PNGs of
ids 1..N written with `vosjax.davis_io.write_mask`.
"""

import pathlib

import cv2
import numpy as np
from PIL import Image

from vosjax import davis_io

RESOLUTION = "480p"
_JPEG_QUALITY = 90


def _smooth_texture(rng, height, width, cells, contrast=1.0):
  """Smooth random RGB texture `[height, width, 3]` float32 in [0, 255]."""
  base = rng.uniform(30, 225, size=3)
  noise = rng.normal(0.0, 45.0 * contrast, size=(cells[0], cells[1], 3))
  tex = cv2.resize(noise.astype(np.float32), (width, height),
                   interpolation=cv2.INTER_CUBIC)
  # Fine detail (stripes at a random angle) gives local structure to match.
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  angle = rng.uniform(0, np.pi)
  period = rng.uniform(4.0, 12.0)
  stripes = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 2 * np.pi /
                   period)
  tex += (18.0 * contrast * stripes)[..., None] * rng.uniform(0.5, 1.0, 3)
  return np.clip(tex + base, 0, 255).astype(np.float32)


def _bounce(p0, v, t, lo, hi):
  """Positions of a point moving at speed v reflected inside [lo, hi]."""
  span = max(hi - lo, 1e-3)
  x = (p0 - lo + v * t) % (2 * span)
  return lo + np.where(x > span, 2 * span - x, x)


class _Blob:
  """A star-convex, deforming, moving shape with its own texture."""

  def __init__(self, rng, num_frames, height, width, size_range):
    self.r0 = rng.uniform(*size_range) * min(height, width)
    t = np.arange(num_frames, dtype=np.float32)
    # Fast motion: 0.3-0.6 radius per frame, so a copied mask drifts off soon.
    speed = rng.uniform(0.3, 0.6) * self.r0
    heading = rng.uniform(0, 2 * np.pi)
    margin = 0.3 * self.r0
    self.cy = _bounce(rng.uniform(margin, height - margin),
                      speed * np.sin(heading), t, margin, height - margin)
    self.cx = _bounce(rng.uniform(margin, width - margin),
                      speed * np.cos(heading), t, margin, width - margin)
    # Scale breathing and rotation.
    self.scale = 1.0 + 0.25 * np.sin(
        rng.uniform(0.2, 0.6) * t + rng.uniform(0, 2 * np.pi))
    self.rot = rng.uniform(0, 2 * np.pi) + rng.uniform(-0.25, 0.25) * t
    # Harmonics 2..4 with amplitudes drifting over time (deformation).
    k = 3
    self.harm = np.arange(2, 2 + k, dtype=np.float32)
    a0 = rng.uniform(0.05, 0.22, size=k)
    da = rng.uniform(0.2, 0.5, size=k)
    ph = rng.uniform(0, 2 * np.pi, size=k)
    self.amp = a0[None] * (1.0 + 0.8 * np.sin(da[None] * t[:, None] + ph[None]))
    self.phase = rng.uniform(0, 2 * np.pi, size=k)[None] + (
        rng.uniform(-0.3, 0.3, size=k)[None] * t[:, None])
    pad = int(np.ceil(2.6 * self.r0))
    self.texture = _smooth_texture(rng, 2 * pad, 2 * pad,
                                   (rng.integers(3, 6), rng.integers(3, 6)))
    self.pad = pad

  def render(self, t, yy, xx):
    """(mask [H, W] bool, colours [H, W, 3] float32) at frame t."""
    dy, dx = yy - self.cy[t], xx - self.cx[t]
    theta = np.arctan2(dy, dx) - self.rot[t]
    wobble = np.sum(self.amp[t][:, None, None] * np.cos(
        self.harm[:, None, None] * theta[None] + self.phase[t][:, None, None]),
                    axis=0)
    radius = self.r0 * self.scale[t] * (1.0 + wobble)
    mask = np.hypot(dy, dx) < radius
    # The texture moves (and rotates) with the object.
    c, s = np.cos(self.rot[t]), np.sin(self.rot[t])
    u = np.clip((c * dx + s * dy) + self.pad, 0, 2 * self.pad - 1)
    v = np.clip((-s * dx + c * dy) + self.pad, 0, 2 * self.pad - 1)
    colours = self.texture[v.astype(np.int32), u.astype(np.int32)]
    return mask, colours


def render_sequence(rng, num_frames, height, width, num_objects=1):
  """Renders one synthetic video.

  Args:
    rng: a `np.random.Generator` (consumed; the video is a pure function of
      its state).
    num_frames: T >= 1.
    height, width: frame size in pixels (>= 16).
    num_objects: number of labelled objects, 1..254.

  Returns:
    frames: `[T, H, W, 3]` uint8 RGB.
    ids: `[T, H, W]` uint8 object ids, 0 = background, 1..num_objects.
  """
  if num_frames < 1 or height < 16 or width < 16:
    raise ValueError(f"need num_frames >= 1 and a frame of at least 16x16, got "
                     f"{num_frames} frames of {height}x{width}")
  if not 1 <= num_objects <= 254:
    raise ValueError(f"num_objects must be in 1..254, got {num_objects}")
  t = np.arange(num_frames, dtype=np.float32)
  # Background: a panning window over a larger texture (camera motion).
  pan = max(4, int(0.25 * min(height, width)))
  bg = _smooth_texture(rng, height + 2 * pan, width + 2 * pan,
                       (rng.integers(4, 8), rng.integers(5, 10)), contrast=0.8)
  pan_y = np.round(pan + pan * np.sin(rng.uniform(0.1, 0.3) * t +
                                      rng.uniform(0, 2 * np.pi))).astype(int)
  pan_x = np.round(pan + pan * np.sin(rng.uniform(0.1, 0.3) * t +
                                      rng.uniform(0, 2 * np.pi))).astype(int)
  objects = [_Blob(rng, num_frames, height, width, (0.16, 0.24))
             for _ in range(num_objects)]
  occluder = _Blob(rng, num_frames, height, width, (0.12, 0.18))
  yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
  frames = np.empty((num_frames, height, width, 3), np.uint8)
  ids = np.zeros((num_frames, height, width), np.uint8)
  for i in range(num_frames):
    image = bg[pan_y[i]:pan_y[i] + height, pan_x[i]:pan_x[i] + width].copy()
    label = np.zeros((height, width), np.uint8)
    # Painter's order: object 1 is farthest, the occluder is nearest.
    for obj_id, obj in enumerate(objects, start=1):
      mask, colours = obj.render(i, yy, xx)
      image[mask] = colours[mask]
      label[mask] = obj_id
    mask, colours = occluder.render(i, yy, xx)
    image[mask] = colours[mask]
    label[mask] = 0
    frames[i] = np.clip(image, 0, 255).astype(np.uint8)
    ids[i] = label
  return frames, ids


def _write_jpeg(path, frame):
  ok, buf = cv2.imencode(".jpg", frame[..., ::-1],
                         [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
  if not ok:
    raise OSError(f"cannot encode JPEG for {path}")
  davis_io.atomic_write(path, lambda f: f.write(buf.tobytes()))


def _write_gray(path, mask):
  image = Image.fromarray(mask, mode="L")
  davis_io.atomic_write(path, lambda f: image.save(f, format="PNG"))


def generate(root, *, year=2016, splits=(("train", 4), ("val", 2)),
             num_frames=12, height=96, width=160, num_objects=1, seed=0):
  """Writes a synthetic DAVIS-format dataset under `root`.

  Args:
    root: output folder (created; existing files of the same names are
      overwritten).
    year: 2016 (grayscale {0, 255} masks, `ImageSets/480p` path pairs) or 2017
      (palette id masks, `ImageSets/2017` names).
    splits: `(split name, number of sequences)` pairs.
    num_frames: frames per sequence.
    height, width: frame size.
    num_objects: labelled objects per sequence (2016 merges them into one
      foreground, like the official single-object annotations).
    seed: everything written is a pure function of the arguments.

  Returns:
    `{split: [sequence names]}`; names are `'<split>-<index:03d>'`.
  """
  if year not in (2016, 2017):
    raise ValueError(f"year must be 2016 or 2017, got {year!r}")
  root = pathlib.Path(root)
  names = {}
  db_lines = ["sequences:"]
  for split_index, (split, count) in enumerate(splits):
    names[split] = []
    for k in range(count):
      name = f"{split}-{k:03d}"
      # One stream per sequence, so adding splits never changes others.
      rng = np.random.default_rng([seed, split_index, k, year])
      frames, ids = render_sequence(rng, num_frames, height, width, num_objects)
      for i in range(num_frames):
        _write_jpeg(root / "JPEGImages" / RESOLUTION / name / f"{i:05d}.jpg",
                    frames[i])
        mask_path = root / "Annotations" / RESOLUTION / name / f"{i:05d}.png"
        if year == 2016:
          _write_gray(mask_path, np.where(ids[i] > 0, 255, 0).astype(np.uint8))
        else:
          davis_io.write_mask(mask_path, ids[i])
      names[split].append(name)
      db_lines += [f"- name: {name}", f"  num_frames: {num_frames}",
                   f"  num_objects: {num_objects}", f"  set: {split}"]
  # Split files last: a crash earlier leaves no split listing the sequences.
  davis_io.atomic_write(root / "Annotations" / "db_info.yml",
                        lambda f: f.write("\n".join(db_lines) + "\n"), mode="w")
  for split, seqs in names.items():
    if year == 2016:
      lines = [f"/JPEGImages/{RESOLUTION}/{s}/{i:05d}.jpg "
               f"/Annotations/{RESOLUTION}/{s}/{i:05d}.png "
               for s in seqs for i in range(num_frames)]
      path = root / "ImageSets" / RESOLUTION / f"{split}.txt"
    else:
      lines = list(seqs)
      path = root / "ImageSets" / "2017" / f"{split}.txt"
    text = "\n".join(lines) + "\n"
    davis_io.atomic_write(path, lambda f, t=text: f.write(t), mode="w")
  return names
