"""`python -m vosjax.tools.segment_video` never loses a user's file and
refuses bad input in one line before any model is loaded (issue 29).

Each case runs the CLI as a subprocess (as a user would: exit code, stderr)
and checks the one-line message and that no file under the inputs or --out
changed (sha256 of every file before and after). Refusals come before any
model is loaded, so no model is needed: the CLI is pointed at the untrained
`pml_i3d_zero_shot` and must stop before printing "loading". Where a run has
to get past the model (Ctrl-C, writing), `vosjax.segment` is replaced in
the subprocess by a stand-in that returns masks at once or waits.
"""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from tests.test_video_io import tree_hashes
from tests.test_video_io import write_avi
from tests.test_video_io import write_frames
from vosjax import experiments
from vosjax import workdir
from vosjax.tools import segment_video

REPO = pathlib.Path(__file__).resolve().parent.parent
MODEL = ["--experiment", "pml_i3d_zero_shot"]

# A stand-in for vosjax.segment: its segmenter labels every frame with the
# first mask at once, or first waits (SLEEP_IN=load|segment) so the test can
# press Ctrl-C there. Overlays can be made slow too (SLEEP_IN=overlays).
STAND_IN = textwrap.dedent("""
    import os, sys, time, types
    import numpy as np
    from vosjax import overlays
    sleep_in = os.environ.get("SLEEP_IN")

    def pause(where):
      if sleep_in == where:
        print(f"waiting in {where}", file=sys.stderr, flush=True)
        time.sleep(60)

    class Segmenter:
      program = "stand-in"
      def chosen_variant(self):
        return "first-mask"
      def segment(self, frames, mask, name):
        # Which frame the first mask went with (test frames are flat greys).
        print(f"first frame grey {round(frames[0].mean())}", file=sys.stderr)
        pause("segment")
        return np.repeat(mask[None], len(frames), axis=0)

    def load(*args, **kwargs):
      pause("load")
      return Segmenter()

    write = overlays.write_sequence_overlays
    def slow_overlays(*args, **kwargs):
      write(*args, **kwargs)
      pause("overlays")
    overlays.write_sequence_overlays = slow_overlays
    sys.modules["vosjax.segment"] = types.SimpleNamespace(load=load)
    from vosjax.tools import segment_video
    segment_video.main(sys.argv[1:])
""")


def _env(**extra):
  return dict(os.environ, PYTHONPATH=str(REPO), **extra)


def run_cli(*args, stand_in=False, **env):
  """`(exit code, stderr, stdout)` of the CLI (or with the stand-in)."""
  cmd = ([sys.executable, "-c", STAND_IN] if stand_in else
         [sys.executable, "-m", "vosjax.tools.segment_video"])
  proc = subprocess.run(cmd + [str(a) for a in args], capture_output=True,
                        text=True, env=_env(**env), cwd=REPO, timeout=120,
                        check=False)
  return proc.returncode, proc.stderr, proc.stdout


def refused(args, code=1):
  """The one line of a refusal that came before any model was loaded."""
  rc, err, out = run_cli(*args)
  assert rc == code, err
  assert "Traceback" not in err and "loading" not in err, err
  assert err.count("\n") == 1 and err.startswith("segment_video: "), err
  assert not out
  return err[len("segment_video: "):].rstrip("\n")


def mask_png(path, value=255):
  mask = np.zeros((48, 64), np.uint8)
  mask[10:30, 20:40] = value
  Image.fromarray(mask).save(path)
  return path


@pytest.fixture
def clip(tmp_path):
  """`~/v/clip/` (4 JPEGs and a README) and `~/v/mask.png`, as in the
  issue."""
  v = tmp_path / "v"
  write_frames(v / "clip", [f"{i:05d}.jpg" for i in range(4)])
  (v / "clip" / "README").write_text("my frames\n")
  return v / "clip", mask_png(v / "mask.png")


def earlier_output(out, name="clip", num_frames=4):
  """What an earlier segment_video run left under `out` (written by its own
  writer, no model needed)."""
  frames = np.zeros((num_frames, 48, 64, 3), np.uint8)
  masks = np.zeros((num_frames, 48, 64), np.uint8)
  masks[:, :10, :10] = 1
  return segment_video.write_outputs(
      out, name, frames, [f"{i:05d}" for i in range(num_frames)], masks, None,
      10.0)


def test_out_above_the_frames_folder_is_refused(clip):
  """`--frames ~/v/clip --out ~/v` deleted the JPEGs."""
  frames, mask = clip
  v = frames.parent
  before = tree_hashes(v)
  message = refused(MODEL + ["--frames", frames, "--first_mask", mask,
                             "--out", v])
  assert message == (f"{v / 'clip'} would replace the input --frames "
                     f"{frames}; pass another --out or --name")
  assert tree_hashes(v) == before


@pytest.mark.parametrize("where", ["same", "inside"])
def test_out_in_the_frames_folder_is_refused(clip, where):
  frames, mask = clip
  out = frames if where == "same" else frames / "masks"
  before = tree_hashes(frames.parent)
  message = refused(MODEL + ["--frames", frames, "--first_mask", mask,
                             "--out", out])
  how = "" if where == "same" else "inside "
  assert message == (f"--out {out} is {how}the input --frames {frames}; "
                     f"write the masks elsewhere")
  assert tree_hashes(frames.parent) == before and not (
      frames / "masks").exists()


def test_video_beside_a_frames_folder_of_its_name_is_refused(clip):
  """`--frames ~/v/clip.mp4 --out ~/v` deleted `~/v/clip/`."""
  frames, mask = clip
  v = frames.parent
  video = write_avi(v / "clip.avi", num_frames=4)
  before = tree_hashes(v)
  message = refused(MODEL + ["--frames", video, "--first_mask", mask,
                             "--out", v])
  assert message == (f"{v / 'clip'} exists and was not written by "
                     f"segment_video (no .segment_video file in it); pass "
                     f"another --out or --name, or move it away")
  assert tree_hashes(v) == before


def test_a_users_file_in_an_earlier_output_is_refused(clip, tmp_path):
  frames, mask = clip
  out = tmp_path / "out"
  earlier_output(out)
  (out / "clip" / "mynotes.txt").write_text("keep me\n")
  before = tree_hashes(out, frames.parent)
  message = refused(MODEL + ["--frames", frames, "--first_mask", mask,
                             "--out", out])
  assert message == (f"{out / 'clip' / 'mynotes.txt'} was not written by "
                     f"segment_video, and {out / 'clip'} would be replaced; "
                     f"move it out of {out / 'clip'}, or pass another --out "
                     f"or --name")
  assert tree_hashes(out, frames.parent) == before


def test_a_users_gif_beside_the_output_is_refused(clip, tmp_path):
  frames, mask = clip
  out = tmp_path / "out"
  out.mkdir()
  (out / "clip.gif").write_bytes(b"GIF89a my animation")
  before = tree_hashes(out)
  message = refused(MODEL + ["--frames", frames, "--first_mask", mask,
                             "--out", out])
  assert message == (f"{out / 'clip.gif'} exists and was not written by "
                     f"segment_video; pass another --out or --name, or move "
                     f"it away")
  assert tree_hashes(out) == before and not (out / "clip").exists()


def test_first_mask_inside_the_output_to_replace_is_refused(clip, tmp_path):
  frames, _ = clip
  out = tmp_path / "out"
  earlier_output(out)
  mask = mask_png(out / "clip" / "00000.png")  # Edited in place, reused.
  before = tree_hashes(out)
  message = refused(MODEL + ["--frames", frames, "--first_mask", mask,
                             "--out", out])
  assert message == (f"{out / 'clip'} would replace the input --first_mask "
                     f"{mask}; pass another --out or --name")
  assert tree_hashes(out) == before


@pytest.mark.parametrize("name,why", [
    ("..", "is not a file name"), (".", "is not a file name"),
    ("a/b", "is a path, not a plain file name"), ("", "is empty"),
    (".hidden", "starts with a dot (a hidden name)")])
def test_name_must_be_a_plain_file_name(clip, tmp_path, name, why):
  """`--name ..` deleted the contents of the parent of --out."""
  frames, mask = clip
  out = tmp_path / "ws" / "out"
  earlier_output(out)
  before = tree_hashes(tmp_path)
  message = refused(MODEL + ["--frames", frames, "--first_mask", mask,
                             "--out", out, "--name", name])
  assert message == (f"--name {name!r} {why}; pass --name with a plain file "
                     f"name, e.g. --name clip")
  assert tree_hashes(tmp_path) == before


@pytest.mark.parametrize("case", ["file", "under_file", "name_is_file"])
def test_out_that_cannot_take_the_outputs_is_refused(clip, tmp_path, case):
  frames, mask = clip
  (tmp_path / "f").write_text("a file\n")
  out = {"file": tmp_path / "f", "under_file": tmp_path / "f" / "out",
         "name_is_file": tmp_path / "out"}[case]
  if case == "name_is_file":
    out.mkdir()
    (out / "clip").write_text("a file named like the output\n")
  before = tree_hashes(tmp_path)
  message = refused(MODEL + ["--frames", frames, "--first_mask", mask,
                             "--out", out])
  assert message == {
      "file": f"--out {out} exists and is not a folder",
      "under_file": f"--out {out}: {tmp_path / 'f'} is a file, not a folder",
      "name_is_file": (f"{out / 'clip'} exists and is not a folder "
                       f"segment_video wrote; pass another --out or --name, "
                       f"or move it away"),
  }[case]
  assert tree_hashes(tmp_path) == before
  assert not [p for p in tmp_path.rglob(".*")]  # No build folder.


def test_out_not_writable_is_refused(clip, tmp_path, monkeypatch, capsys):
  """As root a read-only folder is still writable, so `os.access` is made
  to say no here (in-process); as a user the subprocess sees the real one."""
  frames, mask = clip
  locked = tmp_path / "locked"
  locked.mkdir()
  out = locked / "out"
  before = tree_hashes(tmp_path)
  if os.geteuid() != 0:
    locked.chmod(0o555)
    try:
      message = refused(MODEL + ["--frames", frames, "--first_mask", mask,
                                 "--out", out])
    finally:
      locked.chmod(0o755)
  else:
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: (
        pathlib.Path(p) != locked and real_access(p, mode)))
    with pytest.raises(SystemExit) as e:
      segment_video.main(MODEL + ["--frames", str(frames), "--first_mask",
                                  str(mask), "--out", str(out)])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    message = err[len("segment_video: "):].rstrip("\n")
  assert message == f"--out {out}: {locked} is not writable"
  assert tree_hashes(tmp_path) == before and not out.exists()


@pytest.mark.parametrize("fps", ["0", "-5", "nan"])
def test_fps_must_be_positive(clip, tmp_path, fps):
  frames, mask = clip
  out = tmp_path / "out"
  before = tree_hashes(frames.parent)
  message = refused(MODEL + ["--frames", frames, "--first_mask", mask,
                             "--out", out, f"--fps={fps}"], code=2)
  assert message == (f"argument --fps: {fps!r}: must be a number > 0 "
                     f"(frames per second of the overlay GIF and MP4)")
  assert not out.exists() and tree_hashes(frames.parent) == before


@pytest.mark.parametrize("kind", ["grey", "jpeg", "16bit"])
def test_ambiguous_masks_are_refused_with_how_to_convert(clip, tmp_path,
                                                         kind):
  frames, _ = clip
  mask = np.zeros((48, 64), np.uint8)
  mask[10:30, 20:40] = 255
  mask[10:30, 20] = 128  # An anti-aliased edge.
  path = tmp_path / {"grey": "m.png", "jpeg": "m.jpg", "16bit": "m16.png"}[
      kind]
  if kind == "16bit":
    Image.fromarray((mask > 0).astype(np.uint16) * 256).save(path)
  else:
    Image.fromarray(mask).save(path)
  before = tree_hashes(tmp_path)
  message = refused(MODEL + ["--frames", frames, "--first_mask", path,
                             "--out", tmp_path / "out"])
  assert message.startswith(f"--first_mask {path} is ")
  assert {"grey": "threshold it to 0/255 (e.g. value >= 128 -> 255), or "
                  "save object ids as a palette PNG",
          "jpeg": "save the mask as a PNG (grayscale 0/255, or a palette "
                  "PNG of object ids)",
          "16bit": "values up to 256; ids must be 1-254 (0 background, 255 "
                   "void): save them as an 8-bit palette PNG"}[kind] in (
                       message)
  assert tree_hashes(tmp_path) == before


def test_truncated_video_is_refused_unless_allowed(clip, tmp_path):
  _, mask = clip
  video = write_avi(tmp_path / "cut.avi", keep=0.5)
  out = tmp_path / "out"
  before = tree_hashes(tmp_path)
  message = refused(MODEL + ["--frames", video, "--first_mask", mask,
                             "--out", out])
  decoded = message.split("only ")[1].split()[0]
  assert message == (f"--frames {video}: its container announces 24 frames "
                     f"but only {decoded} decode (truncated or damaged); "
                     f"pass --allow_truncated to segment the first {decoded}")
  assert tree_hashes(tmp_path) == before and not out.exists()
  rc, err, _ = run_cli("--experiment", "x", "--frames", video, "--first_mask",
                       mask, "--out", out, "--allow_truncated",
                       stand_in=True)
  assert rc == 0, err
  assert f"warning: --frames {video}: its container announces 24" in err
  assert len(list((out / "cut").glob("*.png"))) == int(decoded)


def test_mixed_frame_sizes_name_the_odd_file(clip, tmp_path):
  frames, mask = clip
  Image.fromarray(np.zeros((40, 64, 3), np.uint8)).save(frames / "00004.jpg")
  before = tree_hashes(tmp_path)
  message = refused(MODEL + ["--frames", frames, "--first_mask", mask,
                             "--out", tmp_path / "out"])
  assert message == (f"--frames: {frames / '00004.jpg'} is 64x40 but the "
                     f"first frame 00000.jpg is 64x48 (width x height); all "
                     f"frames must have one size")
  assert tree_hashes(tmp_path) == before


def test_frames_in_natural_order_end_to_end(tmp_path):
  """frame8..frame13: the first mask goes with frame8 (grey 10), not
  frame10 (grey 50), and the inputs are left as they were."""
  frames = write_frames(tmp_path / "clip",
                        [f"frame{i}.jpg" for i in range(8, 14)])
  mask = mask_png(tmp_path / "mask.png")
  out = tmp_path / "out"
  inputs = tree_hashes(frames, mask)
  rc, err, stdout = run_cli("--experiment", "x", "--frames", frames,
                            "--first_mask", mask, "--out", out,
                            stand_in=True)
  assert rc == 0, err
  assert "first frame grey 10\n" in err, err
  assert tree_hashes(frames, mask) == inputs
  assert (f"--frames {frames}: 6 frames in natural order (numbers compared "
          f"as numbers): frame8.jpg, frame9.jpg, frame10.jpg, frame11.jpg, "
          f"frame12.jpg, frame13.jpg") in err
  assert "6 masks of clip (stand-in first-mask)" in stdout
  assert sorted(p.name for p in (out / "clip").iterdir()) == sorted(
      [".segment_video"] + [f"frame{i}.png" for i in range(8, 14)])
  # Rerunning replaces the tool's own output (marker found), atomically.
  before = tree_hashes(out)
  rc, err, _ = run_cli("--experiment", "x", "--frames", frames,
                       "--first_mask", mask, "--out", out, "--fps", "5",
                       stand_in=True)
  assert rc == 0, err
  after = tree_hashes(out)
  assert after.keys() == before.keys() and after != before  # New GIF rate.
  assert not list(out.glob(".*"))


def _interrupt(args, sleep_in, out):
  """Runs the stand-in until it waits in `sleep_in`, then sends SIGINT."""
  proc = subprocess.Popen(
      [sys.executable, "-c", STAND_IN] + [str(a) for a in args],
      stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
      env=_env(SLEEP_IN=sleep_in), cwd=REPO,
      # A shell's background job starts with SIGINT ignored (inherited):
      # give the child a real Ctrl-C.
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  lines = []
  for line in proc.stderr:  # Blocks until the stand-in says it waits.
    lines.append(line)
    if line.startswith("waiting in"):
      break
  assert lines and lines[-1] == f"waiting in {sleep_in}\n", lines
  proc.send_signal(signal.SIGINT)
  err = proc.stderr.read()
  proc.wait(timeout=60)
  assert not list(out.glob(".*")), list(out.glob(".*"))  # No build folder.
  return proc.returncode, err


@pytest.mark.parametrize("sleep_in", ["load", "overlays"])
def test_ctrl_c_is_one_line_exit_130_and_writes_nothing(clip, tmp_path,
                                                        sleep_in):
  """While the model loads, and while the outputs are being built: the
  earlier output stays as it was and no build folder is left."""
  frames, mask = clip
  out = tmp_path / "out"
  earlier_output(out)
  before = tree_hashes(out, frames.parent)
  start = time.time()
  rc, err = _interrupt(["--experiment", "x", "--frames", frames,
                        "--first_mask", mask, "--out", out], sleep_in, out)
  assert rc == 130, err
  assert err == f"segment_video: interrupted; nothing was written to {out}\n"
  assert time.time() - start < 50  # Not the stand-in's 60 s wait.
  assert tree_hashes(out, frames.parent) == before


def _runs(ws, *names):
  config = experiments.load_config("osvos_demo")
  for name in names:
    (ws / name).mkdir(parents=True)
    workdir.check_config(config, ws / name)


def test_run_folder_messages(clip, tmp_path):
  """Before any model is loaded, each naming what to pass."""
  frames, mask = clip
  io = ["--frames", frames, "--first_mask", mask, "--out", tmp_path / "out"]
  ws = tmp_path / "ws"
  _runs(ws, "osvos_demo", "osvos_demo_b")
  before = tree_hashes(tmp_path)
  assert refused(["--workdir", ws] + io) == (
      f"--workdir {ws} holds 2 runs (osvos_demo, osvos_demo_b); pass "
      f"--experiment osvos_demo or --experiment osvos_demo_b")
  assert refused(
      ["--workdir", ws, "--experiment", "fc_i3d_demo"] + io) == (
          f"--workdir {ws} has no run fc_i3d_demo; pass --experiment "
          f"osvos_demo or --experiment osvos_demo_b")
  missing = ws / "osvos_demo" / "parent" / "checkpoints" / "5"
  assert refused(["--checkpoint", missing] + io) == (
      f"--checkpoint {missing}: no such file or folder")
  assert refused(
      ["--workdir", ws / "osvos_demo", "--variant", "online"] + io
  ) == "--variant online: osvos with this config gives parent, oneshot"
  assert refused(MODEL + ["--variant", "nosuch"] + io) == (
      "--variant nosuch: pml with this config gives i3d_zero_shot")
  assert tree_hashes(tmp_path) == before


def test_a_failed_write_leaves_the_earlier_output(tmp_path, monkeypatch):
  """A full disk while building, then a rename failing mid-swap: the
  earlier output is as it was (put back), no build folder is left, and the
  error is one `RunError` line naming --out."""
  out = tmp_path / "out"
  earlier_output(out)
  before = tree_hashes(out)

  def full_disk(*args, **kwargs):
    raise OSError(28, "No space left on device")

  with monkeypatch.context() as m:
    m.setattr(segment_video.overlays, "write_sequence_overlays", full_disk)
    with pytest.raises(segment_video.RunError) as e:
      earlier_output(out, num_frames=3)
  assert str(e.value) == (f"cannot write under --out {out}: [Errno 28] No "
                          f"space left on device")
  assert tree_hashes(out) == before and not list(out.glob(".*"))

  real_replace, calls = os.replace, []

  def replace(src, dst):
    # The second part's rename onto --out fails once (the GIF's).
    if pathlib.Path(dst) == out / "clip.gif" and not calls:
      calls.append(dst)
      raise OSError(5, "Input/output error")
    real_replace(src, dst)

  monkeypatch.setattr(os, "replace", replace)
  with pytest.raises(segment_video.RunError) as e:
    earlier_output(out, num_frames=3)
  assert str(e.value) == (f"cannot write under --out {out}: [Errno 5] "
                          f"Input/output error")
  assert calls and tree_hashes(out) == before
  assert not list(out.glob(".*"))


def test_config_values_are_checked_before_loading(clip, tmp_path):
  """`experiments.validate_config`, as run.py: `eval.scale <= 0` made every
  frame after the first background, `eval.k=0` a 43-line traceback."""
  frames, mask = clip
  io = ["--frames", frames, "--first_mask", mask, "--out", tmp_path / "out"]
  before = tree_hashes(tmp_path)
  assert refused(MODEL + io + ["--config.eval.k=0"], code=2) == (
      "--config.eval.k=0: must be a whole number >= 1")
  assert refused(MODEL + io + ["--config.eval.scale=-1"], code=2) == (
      "--config.eval.scale=-1.0: must be a number in (0, 4]")
  assert tree_hashes(tmp_path) == before


def test_a_first_mask_among_the_frames_is_not_segmented_as_a_frame(clip):
  """`--first_mask ~/v/clip/mask.png`: the mask is a PNG in the frames
  folder, and used to be taken as a fifth frame."""
  frames, _ = clip
  mask = mask_png(frames / "mask.png")
  out = frames.parent / "out"
  before = tree_hashes(frames)
  rc, err, stdout = run_cli("--experiment", "x", "--frames", frames,
                            "--first_mask", mask, "--out", out,
                            stand_in=True)
  assert rc == 0, err
  assert (f"--frames {frames}: {mask} is the --first_mask, not a frame: "
          f"left out\n") in err
  assert "4 masks of clip" in stdout
  assert sorted(p.name for p in (out / "clip").glob("*.png")) == [
      f"{i:05d}.png" for i in range(4)]
  assert tree_hashes(frames) == before
