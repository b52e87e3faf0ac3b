"""Tests for vosjax.xla_flags: the XLA:CPU convolution flag and its guards."""

import pathlib
import subprocess
import sys

from vosjax import xla_flags


def test_appends_the_flag_after_the_users_flags():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  assert xla_flags.apply_defaults(env, jaxlib_version="0.10.2")
  assert env["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=2 "
                              + xla_flags.CPU_CONV_FLAG)
  empty = {}
  assert xla_flags.apply_defaults(empty, jaxlib_version="0.10.2")
  assert empty["XLA_FLAGS"] == xla_flags.CPU_CONV_FLAG


def test_the_users_setting_and_unmeasured_jaxlib_are_left_alone():
  mine = "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"
  env = {"XLA_FLAGS": mine}
  assert not xla_flags.apply_defaults(env, jaxlib_version="0.10.2")
  assert env["XLA_FLAGS"] == mine
  env = {}
  assert not xla_flags.apply_defaults(env, jaxlib_version="0.11.0")
  assert env == {}


def test_import_sets_it_in_a_fresh_process_and_xla_accepts_it():
  """In a fresh interpreter, `import vosjax` adds the flag, and XLA (which
  stops on a flag it does not know) compiles and runs a convolution."""
  code = (
      "import os, vosjax, jax, jax.numpy as jnp\n"
      "assert vosjax.xla_flags.CPU_CONV_FLAG in os.environ['XLA_FLAGS']\n"
      "x = jnp.ones((1, 5, 5, 2)); k = jnp.ones((3, 3, 2, 1))\n"
      "y = jax.lax.conv_general_dilated(\n"
      "    x, k, (1, 1), 'SAME', dimension_numbers=('NHWC', 'HWIO', 'NHWC'))\n"
      "print(float(y[0, 2, 2, 0]))\n")
  env = {"PATH": "/usr/bin:/bin", "JAX_PLATFORMS": "cpu"}
  root = pathlib.Path(__file__).resolve().parent.parent
  out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                       capture_output=True, text=True, cwd=root).stdout
  assert out.strip() == "18.0"
