"""JAX's persistent compilation cache, on by default for runs, so a second run of the same shapes skips XLA.

    path = compile_cache.enable()            # $INT4JAX_JAX_CACHE, else ~/.cache/int4jax/jax
    compile_cache.enable("runs/.jax_cache")  # a folder of your choice; enable("none") turns it off

Every executable that took at least `min_compile_s` to compile is written under the folder, keyed by XLA on the
computation, the compile options, the jax/jaxlib version and the device; a later process compiling the same
program reads it back instead (GLUE: the train step with its teacher, and the eval step). The cache is safe to
share between concurrent runs (jax writes entries atomically) and to delete at any time. On GPU, XLA's autotune
results are cached in the same folder too (jax's default).
"""

from __future__ import annotations

import os

ENV = "INT4JAX_JAX_CACHE"
OFF = ("", "none", "off")


def default_dir() -> str:
  return os.environ.get(ENV) or os.path.join(os.path.expanduser("~"), ".cache", "int4jax", "jax")


def enable(path: str | None = None, *, min_compile_s: float = 0.5) -> str | None:
  """Turns the persistent cache on at `path` (default: default_dir()); "none" turns it off. Returns the folder
  or None. Call before the first compilation; later calls just move the folder."""
  import jax  # pylint: disable=g-import-not-at-top  (launchers parse flags before jax starts)
  path = default_dir() if path is None else path
  if path.lower() in OFF:
    jax.config.update("jax_compilation_cache_dir", None)
    return None
  path = os.path.abspath(os.path.expanduser(path))
  os.makedirs(path, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", path)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_s)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return path
