"""Overlays for people: predicted masks blended and outlined on the frames.

Per sequence, an animated GIF of every frame and a contact sheet PNG (a grid
of evenly spaced frames). Object k is drawn in DAVIS palette colour k (1 is
red), blended with weight `alpha` inside the mask and outlined at full
colour; pixels outside every mask and away from the outline are unchanged.
Where ground truth is given, its outline is drawn in `GT_COLOUR` (white) on
top, 1 pixel wide; a caption in the top-left corner names the frame number
and the variant (e.g. "oneshot 00012"). Files are written atomically.
"""

import io
import pathlib

import cv2
import numpy as np
from PIL import Image

from vosjax import davis_io

GT_COLOUR = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def overlay_frame(frame, mask, alpha=0.5, contour_thickness=2, palette=None):
  """One frame with its mask blended and contoured.

  Args:
    frame: `[H, W, 3]` uint8 RGB.
    mask: `[H, W]` integer object ids (0 background; `davis_io.VOID_LABEL`
      is ignored).
    alpha: blend weight of the object colour inside the mask, in [0, 1].
    contour_thickness: outline width in pixels (0: no outline). The outline
      is centred on the mask boundary, so it reaches about half its
      thickness outside the mask.
    palette: `[256, 3]` uint8 colours (default `davis_io.davis_palette()`).

  Returns:
    `[H, W, 3]` uint8 RGB.
  """
  frame = np.asarray(frame)
  mask = np.asarray(mask)
  if frame.ndim != 3 or frame.shape[-1] != 3 or mask.shape != frame.shape[:2]:
    raise ValueError(f"frame {frame.shape} must be [H, W, 3] and mask "
                     f"{mask.shape} [H, W] of the same size")
  palette = davis_io.davis_palette() if palette is None else palette
  out = frame.astype(np.float32)
  ids = [i for i in np.unique(mask) if i not in (0, davis_io.VOID_LABEL)]
  for i in ids:
    inside = mask == i
    colour = palette[i].astype(np.float32)
    out[inside] = (1 - alpha) * out[inside] + alpha * colour
  out = np.clip(np.round(out), 0, 255).astype(np.uint8)
  if contour_thickness > 0:
    for i in ids:
      contours, _ = cv2.findContours((mask == i).astype(np.uint8),
                                     cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
      out = np.ascontiguousarray(out)
      cv2.drawContours(out, contours, -1, tuple(int(c) for c in palette[i]),
                       contour_thickness)
  return out


def outline_ground_truth(image, gt_mask, colour=GT_COLOUR, thickness=1):
  """`image` with the outline of every object of `gt_mask` drawn on it.

  Args:
    image: `[H, W, 3]` uint8 RGB (not modified).
    gt_mask: `[H, W]` ground-truth object ids (0 background;
      `davis_io.VOID_LABEL` ignored).
    colour: RGB outline colour.
    thickness: outline width in pixels.

  Returns:
    `[H, W, 3]` uint8: the object boundaries (`cv2.findContours`, external
    contours) in `colour`, every other pixel as in `image`.
  """
  image, gt_mask = np.asarray(image), np.asarray(gt_mask)
  if gt_mask.shape != image.shape[:2]:
    raise ValueError(f"ground truth {gt_mask.shape} must be [H, W] of the "
                     f"frame {image.shape}")
  out = np.ascontiguousarray(image.copy())
  for i in np.unique(gt_mask):
    if i in (0, davis_io.VOID_LABEL):
      continue
    contours, _ = cv2.findContours((gt_mask == i).astype(np.uint8),
                                   cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, colour, thickness)
  return out


def caption(image, text):
  """`image` with `text` on a black box in its top-left corner.

  The box is as tall as the text needs at a scale suited to the image
  height; pixels outside the box are unchanged. Returns `[H, W, 3]` uint8.
  """
  out = np.ascontiguousarray(np.asarray(image).copy())
  if not text:
    return out
  scale = max(0.3, out.shape[0] / 600)
  thick = max(1, round(scale * 1.5))
  (w, h), base = cv2.getTextSize(text, _FONT, scale, thick)
  pad = max(2, round(3 * scale))
  out[:h + base + 2 * pad, :w + 2 * pad] = 0
  cv2.putText(out, text, (pad, pad + h), _FONT, scale, (255, 255, 255),
              thick, cv2.LINE_AA)
  return out


def _render(frames, masks, index, gt_masks, label, overlay_kwargs):
  """Overlay, ground-truth outline and caption of frame `index`."""
  out = overlay_frame(frames[index], masks[index], **overlay_kwargs)
  if gt_masks is not None and gt_masks[index] is not None:
    out = outline_ground_truth(out, gt_masks[index])
  if gt_masks is not None or label:
    out = caption(out, f"{label} {index:05d}".strip())
  return out


def _resize(image, width):
  """`image` shrunk to `width` pixels wide (aspect kept); never enlarged."""
  if width is None or image.shape[1] <= width:
    return image
  height = max(1, round(image.shape[0] * width / image.shape[1]))
  return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)


def _check(frames, masks, gt_masks=None):
  frames, masks = np.asarray(frames), np.asarray(masks)
  if frames.ndim != 4 or masks.shape != frames.shape[:3] or not len(frames):
    raise ValueError(f"frames {frames.shape} must be [T, H, W, 3] and masks "
                     f"{masks.shape} [T, H, W], T > 0")
  if gt_masks is not None and len(gt_masks) != len(frames):
    raise ValueError(f"{len(gt_masks)} ground-truth masks for {len(frames)} "
                     f"frames")
  return frames, masks


def write_gif(frames, masks, path, fps=10, width=480, gt_masks=None,
              label="", **overlay_kwargs):
  """Animated GIF of all frames with overlays.

  Args:
    frames: `[T, H, W, 3]` uint8 RGB.
    masks: `[T, H, W]` object ids.
    path: output `.gif` path (written atomically).
    fps: frames per second.
    width: maximum GIF width in pixels (larger frames are shrunk, aspect
      kept); None keeps the frame size. GIF colours are quantised to 256
      per frame.
    gt_masks: optional ground truth, `[T, H, W]` object ids or a length-T
      list with None for frames without annotation; outlined in white.
    label: the variant's name; with it or `gt_masks`, each frame is
      captioned "<label> <frame number>".
    **overlay_kwargs: passed to `overlay_frame`.

  Returns:
    `path`.
  """
  frames, masks = _check(frames, masks, gt_masks)
  images = [Image.fromarray(_resize(
      _render(frames, masks, t, gt_masks, label, overlay_kwargs), width))
            for t in range(len(frames))]
  buffer = io.BytesIO()
  images[0].save(buffer, format="GIF", save_all=True,
                 append_images=images[1:], duration=round(1000 / fps),
                 loop=0)
  davis_io.atomic_write(path, lambda f: f.write(buffer.getvalue()))
  return pathlib.Path(path)


def contact_sheet(frames, masks, num_frames=8, columns=4, width=320,
                  gt_masks=None, label="", **overlay_kwargs):
  """A grid of `num_frames` evenly spaced overlaid frames, `[H', W', 3]`.

  Frames `round(linspace(0, T - 1, n))` (n = min(num_frames, T)), each
  shrunk to at most `width` pixels wide, `columns` per row, row-major;
  unused cells are black. `gt_masks` and `label` as in `write_gif`.
  """
  frames, masks = _check(frames, masks, gt_masks)
  n = min(num_frames, len(frames))
  picks = np.round(np.linspace(0, len(frames) - 1, n)).astype(int)
  cells = [_resize(_render(frames, masks, i, gt_masks, label, overlay_kwargs),
                   width) for i in picks]
  columns = min(columns, n)
  rows = -(-n // columns)
  h, w = cells[0].shape[:2]
  sheet = np.zeros((rows * h, columns * w, 3), np.uint8)
  for k, cell in enumerate(cells):
    r, c = divmod(k, columns)
    sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = cell
  return sheet


def write_contact_sheet(frames, masks, path, **kwargs):
  """Writes `contact_sheet(frames, masks, **kwargs)` as a PNG, atomically."""
  image = Image.fromarray(contact_sheet(frames, masks, **kwargs))
  davis_io.atomic_write(path, lambda f: image.save(f, format="PNG"))
  return pathlib.Path(path)


def write_sequence_overlays(frames, masks, out_dir, sequence, fps=10,
                            gif_width=480, sheet_frames=8, sheet_columns=4,
                            sheet_width=320, *, gt_masks=None, label=""):
  """`<out_dir>/<sequence>.gif` and `<out_dir>/<sequence>_sheet.png`.

  Args:
    frames: `[T, H, W, 3]` uint8 RGB.
    masks: `[T, H, W]` predicted object ids (same T, H, W).
    out_dir: folder (created).
    sequence: sequence name, used in the file names.
    fps, gif_width: see `write_gif`.
    sheet_frames, sheet_columns, sheet_width: see `contact_sheet`.
    gt_masks: optional ground truth (`[T, H, W]` ids, or a list with None
      where a frame has none), outlined in white.
    label: the variant's name (e.g. "oneshot"), captioned with the frame
      number on every frame.

  Returns:
    `(gif_path, sheet_path)`.
  """
  out_dir = pathlib.Path(out_dir)
  gif = write_gif(frames, masks, out_dir / f"{sequence}.gif", fps=fps,
                  width=gif_width, gt_masks=gt_masks, label=label)
  sheet = write_contact_sheet(frames, masks, out_dir / f"{sequence}_sheet.png",
                              num_frames=sheet_frames,
                              columns=sheet_columns, width=sheet_width,
                              gt_masks=gt_masks, label=label)
  return gif, sheet


# The name vosjax/programs/fc_i3d.py calls.
write_overlays = write_sequence_overlays
