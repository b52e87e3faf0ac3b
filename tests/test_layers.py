"""The import layering of docs/ARCHITECTURE.md, checked on the source.

Reference: the import statements themselves (parsed with `ast`, nothing is
imported). A module may import vosjax modules of its own layer or below; the
library never imports `datasets/`, `experiments/`, `tests/` or `benchmarks/`;
experiment files import only ml_collections and each other.
"""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Lowest first; a module's layer is that of its longest listed prefix.
LAYERS = (
    ("vosjax.errors", "vosjax.image", "vosjax.sharding", "vosjax.distributed",
     "vosjax.xla_flags", "vosjax.interrupt"),
    ("vosjax.davis_io", "vosjax.overlays", "vosjax.curves", "vosjax.video_io",
     "vosjax.evaluation", "vosjax.evaluate"),
    ("vosjax.data", "vosjax.augment", "vosjax.input_pipeline"),
    ("vosjax.models", "vosjax.losses"),
    ("vosjax.checkpoint", "vosjax.train", "vosjax.finetune",
     "vosjax.inference", "vosjax.propagation", "vosjax.retrieval",
     "vosjax.interactive", "vosjax.embedding"),
    ("vosjax.pipeline", "vosjax.workdir", "vosjax.experiments"),
    ("vosjax.programs", "vosjax.tools", "vosjax.segment"),
)


def _layer(module):
  best, level = "", None
  for i, prefixes in enumerate(LAYERS):
    for p in prefixes:
      if (module == p or module.startswith(p + ".")) and len(p) > len(best):
        best, level = p, i
  return level


def _module_name(path):
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _imports(path):
  tree = ast.parse(path.read_text(), str(path))
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield alias.name
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      yield node.module
      for alias in node.names:
        yield f"{node.module}.{alias.name}"


def _library_modules():
  # The package's own __init__ only applies vosjax.xla_flags (layer 0).
  return sorted(p for p in (ROOT / "vosjax").rglob("*.py")
                if p != ROOT / "vosjax" / "__init__.py")


@pytest.mark.parametrize("path", _library_modules(),
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_library_imports_only_its_layer_and_below(path):
  module = _module_name(path)
  own = _layer(module)
  assert own is not None, f"{module} is in no layer of this test"
  for name in _imports(path):
    top = name.split(".")[0]
    assert top not in ("datasets", "experiments", "tests", "benchmarks"), (
        f"{module} imports {name}")
    if top == "vosjax":
      layer = _layer(name)
      if layer is not None:
        assert layer <= own, (f"{module} (layer {own}) imports {name} "
                              f"(layer {layer})")


def test_experiments_import_only_ml_collections_and_each_other():
  for path in sorted((ROOT / "experiments").glob("*.py")):
    for name in _imports(path):
      assert name.split(".")[0] in ("ml_collections", "experiments"), (
          f"{path.name} imports {name}")
