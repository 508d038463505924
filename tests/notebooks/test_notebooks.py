"""The notebooks run top to bottom (nbclient, the CPU slice each picks for itself), and each .ipynb is its .py.

The .py (jupytext percent format) is the source; `jupytext --sync notebooks/*.py` regenerates the .ipynb. Each
notebook is executed from its .py in a fresh kernel whose PYTHONPATH puts this checkout first, with run
directories under pytest's tmp_path; any cell error fails the test with the cell's traceback.
"""
import os
import pathlib

import pytest

jupytext = pytest.importorskip("jupytext")
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

REPO = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
NAMES = ("01_quantizer_and_policy", "02_qat_kd_glue", "03_int4_inference")


def _execute(name: str, tmp_path, monkeypatch, **env):
  nb = jupytext.read(NOTEBOOKS / f"{name}.py")
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
  monkeypatch.setenv("INT4JAX_WORKDIR", str(tmp_path / "runs"))
  monkeypatch.setenv("MPLBACKEND", "Agg")
  for k, v in env.items():
    monkeypatch.setenv(k, v)
  client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                   resources={"metadata": {"path": str(NOTEBOOKS)}})
  client.execute()
  return nb


def _text(nb) -> str:
  return "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_is_generated_from_the_py(name):
  py = jupytext.read(NOTEBOOKS / f"{name}.py")
  ipynb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
  cells = lambda nb: [(c.cell_type, c.source) for c in nb.cells]
  assert cells(py) == cells(ipynb), f"run `jupytext --sync notebooks/{name}.py`"
  assert not any(c.get("outputs") for c in ipynb.cells if c.cell_type == "code"), "commit the .ipynb without outputs"
  assert ipynb.cells[0].cell_type == "markdown" and "How long" in ipynb.cells[0].source


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs(name, tmp_path, monkeypatch):
  if name == "02_qat_kd_glue":
    data = pathlib.Path(os.environ.get("INT4JAX_DATA", REPO.parent / "shared" / "data"))
    if not (data / "glue" / "SST-2" / "train.tsv").is_file():
      pytest.skip(f"SST-2 is not under {data}/glue/SST-2 (set INT4JAX_DATA)")
  nb = _execute(name, tmp_path, monkeypatch)
  assert "Traceback" not in _text(nb)


def test_qat_notebook_without_data_says_where_to_put_it(tmp_path, monkeypatch):
  with pytest.raises(nbclient.exceptions.CellExecutionError, match="glue/SST-2"):
    _execute("02_qat_kd_glue", tmp_path, monkeypatch, INT4JAX_DATA=str(tmp_path / "no_data_here"))
