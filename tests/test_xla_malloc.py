"""vosjax.xla_flags.apply_malloc_defaults: glibc malloc settings and guards."""

import pathlib
import subprocess
import sys

from vosjax import xla_flags


def _recorder(result=1):
  calls = []

  def mallopt(param, value):
    calls.append((param, value))
    return result

  return calls, mallopt


def test_applies_the_three_settings():
  """Reference: glibc malloc.h, M_ARENA_MAX -8, M_MMAP_MAX -4,
  M_TRIM_THRESHOLD -1."""
  calls, mallopt = _recorder()
  assert xla_flags.apply_malloc_defaults({}, mallopt)
  assert calls == [(-8, 1), (-4, 0), (-1, 2 ** 31 - 1)]


def test_the_users_malloc_settings_win():
  for env in ({"VOSJAX_MALLOC": "system"}, {"MALLOC_ARENA_MAX": "4"},
              {"MALLOC_MMAP_MAX_": "0"},
              {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1"}):
    calls, mallopt = _recorder()
    assert not xla_flags.apply_malloc_defaults(env, mallopt)
    assert not calls, env


def test_a_refused_setting_is_reported():
  _, mallopt = _recorder(result=0)
  assert not xla_flags.apply_malloc_defaults({}, mallopt)


def test_import_applies_them_in_a_fresh_process():
  """`import vosjax` on glibc: mallopt accepted every setting."""
  code = ("import os, vosjax\n"
          "glibc = bool(os.confstr('CS_GNU_LIBC_VERSION'))\n"
          "print(vosjax.xla_flags.MALLOC_APPLIED == glibc)\n")
  root = pathlib.Path(__file__).resolve().parent.parent
  out = subprocess.run([sys.executable, "-c", code], check=True, text=True,
                       capture_output=True, cwd=root,
                       env={"PATH": "/usr/bin:/bin"}).stdout
  assert out.strip() == "True"
