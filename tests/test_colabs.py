"""Executes the Colab notebooks in colabs/ end to end, as CI's check of them.

Each notebook runs top to bottom in a fresh `python3` kernel (ipykernel from
this environment, driven by nbclient) with the repository root as working
directory, on CPU with the notebooks' small CPU settings. The kernel gets
`VOSJAX_NOTEBOOK_CI=1`, so the runtime cell neither clones nor installs, and
a scratch folder for everything the notebook writes. A failing cell fails
the test with that cell's source and traceback; each notebook's execution
time is printed and recorded as a junit property.

The reference each notebook is checked against is its own claims: the
figures it prints must be there (J&F tables, latency per interaction), the
images it promises must be displayed, and the stored notebooks are clean
(no outputs) and start as documented.
"""

import base64
import os
import pathlib
import re
import resource
import sys
import time

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = pathlib.Path(__file__).resolve().parent.parent
COLABS = REPO / "colabs"
# Notebook -> strings its printed output must contain.
NOTEBOOKS = {
    "quickstart.ipynb": ("runtime: CPU", "FC-I3D on 2 val sequences",
                         "Global results for val", "oneshot"),
    "interactive_pml.ipynb": ("runtime: CPU", "latency ms",
                              "mask frame 0", "remove object click",
                              "The click widget needs Colab"),
    "evaluate_davis.ipynb": ("runtime: CPU", "Global results for val",
                             "Per sequence results for val",
                             "worst sequence for first_frame"),
}
PNG_MAGIC = b"\x89PNG"
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # IPython's coloured tracebacks.


def _kernel_env(scratch):
  """The test's environment as a Colab CPU runtime sees it: one CPU device.

  tests/conftest.py forces 4 host devices for the suite; the notebooks are
  meant for Colab's runtimes, so the flag is dropped for their kernel.
  """
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags)
  env["JAX_PLATFORMS"] = "cpu"
  env["VOSJAX_NOTEBOOK_CI"] = "1"
  env["VOSJAX_NOTEBOOK_TMP"] = str(scratch)
  env.pop("DAVIS_DIR", None)  # The notebooks' synthetic defaults.
  env.pop("RESULTS_DIR", None)
  return env


def _children_cpu_seconds():
  usage = resource.getrusage(resource.RUSAGE_CHILDREN)
  return usage.ru_utime + usage.ru_stime


def _outputs(nb):
  """(all printed text, decoded PNG/GIF images) of an executed notebook."""
  text, images = [], []
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      if out.output_type == "stream":
        text.append(out.text)
      elif out.output_type in ("display_data", "execute_result"):
        data = out.get("data", {})
        text.append(data.get("text/plain", ""))
        for mime in ("image/png", "image/gif"):
          if mime in data:
            images.append((mime, base64.b64decode(data[mime])))
  return "".join(text), images


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_is_stored_clean_and_starts_with_the_runtime_cell(name):
  nb = nbformat.read(COLABS / name, as_version=4)
  nbformat.validate(nb)
  first, runtime = nb.cells[0], nb.cells[1]
  assert first.cell_type == "markdown" and "Open in Colab" in first.source
  assert runtime.cell_type == "code" and "jax.devices()" in runtime.source
  assert "pip" in runtime.source and "REPO_URL" in runtime.source
  for cell in nb.cells:
    if cell.cell_type == "code":
      assert cell.outputs == [] and cell.execution_count is None, name


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_executes_on_cpu(name, tmp_path, record_property,
                                  monkeypatch):
  # The `python3` kernel of this environment (ipykernel installs its spec
  # under sys.prefix), not one a user-level Jupyter config may define.
  monkeypatch.setenv("JUPYTER_PATH",
                     str(pathlib.Path(sys.prefix) / "share" / "jupyter"))
  nb = nbformat.read(COLABS / name, as_version=4)
  client = NotebookClient(
      nb, timeout=600, kernel_name="python3",
      resources={"metadata": {"path": str(REPO)}})
  start, cpu = time.perf_counter(), _children_cpu_seconds()
  try:
    client.execute(env=_kernel_env(tmp_path))
  except CellExecutionError as e:
    pytest.fail(f"{name}: a cell failed:\n{ANSI.sub('', str(e))}",
                pytrace=False)
  seconds = time.perf_counter() - start
  # CPU time of the kernel and what it ran (once they have exited): a figure
  # that a busy machine inflates less than the wall clock.
  cpu = _children_cpu_seconds() - cpu
  record_property(f"{name}_seconds", round(seconds, 1))
  record_property(f"{name}_cpu_seconds", round(cpu, 1))
  print(f"\n{name}: executed in {seconds:.1f} s ({cpu:.1f} s CPU)")
  text, images = _outputs(nb)
  for expected in NOTEBOOKS[name]:
    assert expected in text, f"{name}: no {expected!r} in its output"
  assert any(data.startswith(PNG_MAGIC) for _, data in images), (
      f"{name}: no PNG shown")
  if name == "quickstart.ipynb":
    assert any(mime == "image/gif" and data.startswith(b"GIF8")
               for mime, data in images), "quickstart: no GIF shown"
    assert (tmp_path / "tiny" / "fc_i3d_demo" / "summary.json").is_file()
  if name == "evaluate_davis.ipynb":
    assert (tmp_path / "shifted_gt" / "global_results-val.csv").is_file()
