"""Fast, exact decoding of 8-bit palette/grayscale PNG masks.

PNG decoding is most of the evaluator's time: PIL needs ~3.4 ms per 854x480
DAVIS mask here, two thirds of it in zlib. Masks are the simplest PNGs (one
8-bit channel, no interlacing), so this decodes them directly: the IDAT stream
is inflated with libdeflate (`deflate` package, ~20x faster than zlib on these
files) or ISA-L (`isal`) when installed, else zlib; rows filtered with None,
Sub or Up are unfiltered with vectorised prefix sums (the DAVIS ground truth
and cv2 use Sub, PIL palette masks None). Anything else (Average/Paeth filters, other bit
depths or colour types, interlacing) falls back to `davis_io.read_mask`, so
the result is always identical to PIL's palette indices / gray values. One
exception: 16-bit grayscale masks are refused when they hold an id above 255
(PIL's values cast to uint8 would wrap, 256 to background).
"""

import struct
import zlib

import cv2
import numpy as np
from PIL import Image

from vosjax import davis_io

try:  # libdeflate: whole-buffer inflate, the fastest.
  import deflate as _deflate  # pytype: disable=import-error
except ImportError:  # pragma: no cover - optional
  _deflate = None
try:
  from isal import isal_zlib as _isal  # pytype: disable=import-error
except ImportError:  # pragma: no cover - optional
  _isal = None

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def inflate_backend():
  """Name of the inflate library in use: 'libdeflate', 'isal' or 'zlib'."""
  if _deflate is not None:
    return "libdeflate"
  return "isal" if _isal is not None else "zlib"


def _inflate(data, size):
  if _deflate is not None:
    return _deflate.zlib_decompress(data, size)
  if _isal is not None:
    return _isal.decompress(data)
  return zlib.decompress(data)


def _row_prefix_sum(f, out):
  """Per-row running sum mod 256 of `[R, W]` uint8 into `out` (PNG 'Sub').

  A mask's Sub-filtered bytes are zero except where a row changes value, so
  only their bounding box is summed: rows outside it are zero, and columns
  left of it are zero and right of it repeat the box's last column.
  cv2.integral is a vectorised 2-D prefix sum; row r's running sums are the
  difference of two consecutive integral rows (int32), whose low byte is
  the sum mod 256 (written into uint8 by an unsafe cast, which keeps the low
  byte).
  """
  nz = np.flatnonzero(f.any(axis=1))
  if not nz.size:
    out[...] = 0
    return out
  a, b = nz[0], nz[-1] + 1
  cols = np.flatnonzero(f[a:b].any(axis=0))
  c, d = cols[0], cols[-1] + 1
  out[:a] = 0
  out[b:] = 0
  out[a:b, :c] = 0
  integral = cv2.integral(np.ascontiguousarray(f[a:b, c:d]))
  np.subtract(integral[1:, 1:], integral[:-1, 1:], out=out[a:b, c:d],
              casting="unsafe")
  out[a:b, d:] = out[a:b, d - 1:d]
  return out


def _parse(buf, path):
  if buf[:8] != _SIGNATURE:
    raise davis_io.DavisFormatError(f"{path} is not a PNG file")
  pos, ihdr, idat = 8, None, []
  n = len(buf)
  while pos + 8 <= n:
    length, kind = struct.unpack(">I4s", buf[pos:pos + 8])
    body = buf[pos + 8:pos + 8 + length]
    if kind == b"IHDR":
      ihdr = struct.unpack(">IIBBBBB", body[:13])
    elif kind == b"IDAT":
      idat.append(body)
    elif kind == b"IEND":
      break
    pos += 12 + length
  return ihdr, b"".join(idat)


def decode_mask(path, out=None, *, allow_view=False):
  """Raw mask values `[H, W]` uint8, identical to `davis_io.read_mask(path)`.

  Args:
    path: PNG file.
    out: optional `[H, W]` uint8 array to decode into (saves a copy); a mask
      of another size raises `davis_io.DavisFormatError` naming the file.
    allow_view: when every row is unfiltered (PIL's palette masks), return a
      read-only strided view of the inflated rows instead of copying them
      into `out` (whose shape is still checked); callers that only read the
      mask save a pass over it.
  """
  try:
    with open(path, "rb") as fh:
      buf = fh.read()
  except OSError as e:
    raise davis_io.DavisFormatError(f"cannot read mask {path}: {e}") from e
  try:
    ihdr, data = _parse(buf, path)
  except struct.error:
    ihdr, data = None, b""
  fast = ihdr is not None and bool(data)
  if fast:
    width, height, depth, color, _, _, interlace = ihdr
    fast = depth == 8 and color in (0, 3) and interlace == 0
  if ihdr is not None and ihdr[2] == 16 and ihdr[3] == 0:
    mask = _read_16bit(path)
    if out is None:
      return mask
    _check_shape(path, mask.shape, out)
    out[...] = mask
    return out
  rows = None
  if fast:
    stride = width + 1
    try:
      raw = _inflate(data, height * stride)
    except Exception:  # pylint: disable=broad-except
      raw = b""  # Corrupt or unusual stream: PIL decides.
    if len(raw) >= height * stride:
      rows = np.frombuffer(raw, np.uint8, count=height * stride).reshape(
          height, stride)
      if rows[:, 0].max(initial=0) > 2:
        rows = None  # Average / Paeth filters: sequential, use PIL.
  if rows is None:
    mask = davis_io.read_mask(path)
    if out is None:
      return mask
    _check_shape(path, mask.shape, out)
    out[...] = mask
    return out
  if out is None:
    out = np.empty((height, width), np.uint8)
  _check_shape(path, (height, width), out)
  filters = rows[:, 0]
  if allow_view and not filters.any():
    return rows[:, 1:]
  sub = filters == 1
  if sub.all():
    return _row_prefix_sum(rows[:, 1:], out)
  out[...] = rows[:, 1:]
  if sub.any():
    out[sub] = _row_prefix_sum(out[sub], np.empty_like(out[sub]))
  up = np.flatnonzero(filters == 2)
  if up.size:
    # Runs of consecutive 'Up' rows: a column-wise running sum seeded by the
    # (already final) row above the run.
    breaks = np.flatnonzero(np.diff(up) > 1) + 1
    for run in np.split(up, breaks):
      a, b = run[0], run[-1] + 1
      block = out[a:b]
      if a > 0:
        block[0] += out[a - 1]
      np.cumsum(block, axis=0, dtype=np.uint8, out=block)
  return out


def _read_16bit(path):
  """A 16-bit grayscale mask as uint8 ids; ids above 255 are refused.

  PIL reads it as 16-bit integers, and `davis_io.read_mask`'s cast to uint8
  keeps the low byte: id 256 would become 0 (background), 257 object 1.
  """
  try:
    with Image.open(path) as im:
      values = np.asarray(im)
  except (OSError, SyntaxError) as e:
    raise davis_io.DavisFormatError(f"cannot read mask {path}: {e}") from e
  top = int(values.max(initial=0))
  if top > 255:
    raise davis_io.DavisFormatError(
        f"{path} is a 16-bit PNG holding id {top}; masks hold ids 0-255 "
        f"(255 = void): write 8-bit palette or grayscale PNGs")
  return values.astype(np.uint8)


def _check_shape(path, shape, out):
  if tuple(shape) != out.shape:
    raise davis_io.DavisFormatError(
        f"{path} is {shape[1]}x{shape[0]}, expected "
        f"{out.shape[1]}x{out.shape[0]}")
