"""The house rules on imports (docs/architecture.md): no import cycle among int4jax / kernels_pallas / experiments
modules; data flows one way (nothing below tasks/ imports a task, the library never imports experiments/, the
kernels know no model and no training); every module imports on its own, as the first project module loaded."""
import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("int4jax", "kernels_pallas", "experiments")


def project_modules() -> dict[str, str]:
  """module name -> file path, for every .py file of the three packages."""
  out = {}
  for pkg in PACKAGES:
    for root, _, files in os.walk(os.path.join(REPO, pkg)):
      for f in files:
        if f.endswith(".py"):
          rel = os.path.relpath(os.path.join(root, f), REPO)[:-3].replace(os.sep, ".")
          out[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(root, f)
  return out


def imports_of(name: str, path: str, modules) -> set[str]:
  """Project modules that `name` imports at module level or in functions (`from a import b` counts a.b if it is a
  module, else a)."""
  tree = ast.parse(open(path).read(), path)
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for a in node.names:
        found.add(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module)
  return {m for m in found if m in modules and m != name}


def graph():
  modules = project_modules()
  return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_no_import_cycles():
  g = graph()
  state, stack = {}, []

  def visit(m):
    state[m] = "open"
    stack.append(m)
    for n in sorted(g[m]):
      # A package's __init__ importing its own submodules is not a cycle of ideas; skip parent -> child edges.
      if n.startswith(m + "."):
        continue
      if state.get(n) == "open":
        cycle = stack[stack.index(n):] + [n]
        raise AssertionError("import cycle: " + " -> ".join(cycle))
      if n not in state:
        visit(n)
    stack.pop()
    state[m] = "done"

  for m in sorted(g):
    if m not in state:
      visit(m)


def test_data_flows_one_way():
  g = graph()
  for m, deps in g.items():
    if m.startswith("int4jax.") and not m.startswith("int4jax.tasks"):
      assert not {d for d in deps if d.startswith("int4jax.tasks")}, f"{m} imports a task: {deps}"
    if m.startswith(("int4jax", "kernels_pallas")):
      assert not {d for d in deps if d.startswith("experiments")}, f"library module {m} imports experiments/"
    if m.startswith("kernels_pallas"):
      bad = {d for d in deps if d.startswith("int4jax") and not d.startswith("int4jax.quant")}
      assert not bad, f"{m} reaches into models/training: {bad}"


_IMPORT_EACH = (
    "import importlib, sys, traceback\n"
    "import jax, flax, optax  # noqa: F401\n"
    "names = sys.argv[1:]\n"
    "bad = []\n"
    "for name in names:\n"
    "  for m in [m for m in sys.modules if m.split('.')[0] in ('int4jax', 'kernels_pallas', 'experiments')]:\n"
    "    del sys.modules[m]\n"
    "  try:\n"
    "    importlib.import_module(name)\n"
    "  except Exception:\n"
    "    bad.append(name + ': ' + traceback.format_exc().strip().splitlines()[-1])\n"
    "print('\\n'.join(bad))\n"
    "sys.exit(1 if bad else 0)\n")


def test_every_module_imports_first():
  """Each module imported with no other project module loaded (a fresh interpreter as far as the project is
  concerned; jax stays loaded to keep this fast). Library modules share one interpreter; each launcher gets its own,
  since launchers may define absl flags at import and absl's flag namespace is per process."""
  names = sorted(m for m in project_modules() if not m.endswith("__main__"))
  library = [n for n in names if not n.startswith("experiments.")]
  groups = [library] + [[n] for n in names if n.startswith("experiments.")]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=REPO)
  procs = []
  for group in groups:   # a few at a time: each start imports jax
    procs.append(subprocess.Popen([sys.executable, "-c", _IMPORT_EACH, *group], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    if len(procs) % 4 == 0:
      procs[-4].wait(timeout=600)
  failures = []
  for p in procs:
    out, err = p.communicate(timeout=600)
    if p.returncode:
      failures.append(out[-2000:] + err[-2000:])
  assert not failures, "\n".join(failures)
