"""``PIRID_RESULTS``: the results folder the notebooks read (``notebook.settings().results_root``)."""
from __future__ import annotations

import pytest

from pirid_lite import notebook
from pirid_lite.utils import REPO_ROOT


@pytest.fixture(autouse=True)
def _full_mode(monkeypatch):
    monkeypatch.setenv("PIRID_NOTEBOOK_MODE", "full")     # no temporary scratch folder
    monkeypatch.delenv(notebook.RESULTS, raising=False)


def test_results_default_to_the_repository_folder_and_describe_stays_as_it_was():
    nb = notebook.settings()
    assert nb.results_root == REPO_ROOT / "results" == notebook.DEFAULT_RESULTS
    assert notebook.RESULTS not in nb.describe()       # the committed first line of every notebook
    assert nb.describe().splitlines()[1] == "(set PIRID_NOTEBOOK_MODE / PIRID_DATASET / PIRID_DATA_ROOT to change)"


def test_results_set_to_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(notebook.RESULTS, str(tmp_path))
    nb = notebook.settings()
    assert nb.results_root == tmp_path.resolve()
    described = nb.describe().splitlines()
    assert described[-1] == f"results read from {tmp_path.resolve()} (PIRID_RESULTS)"
    assert len(described) == 3


def test_results_set_to_the_default_folder_is_not_mentioned(monkeypatch):
    monkeypatch.setenv(notebook.RESULTS, str(REPO_ROOT / "results"))
    assert notebook.RESULTS not in notebook.settings().describe()


def test_a_relative_results_folder_is_read_from_the_repository_root(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)                          # the kernel's cwd (notebooks/) does not matter
    monkeypatch.setenv(notebook.RESULTS, "results")
    nb = notebook.settings()
    assert nb.results_root == (REPO_ROOT / "results").resolve()
    assert notebook.RESULTS not in nb.describe()


def test_results_set_to_a_missing_folder_is_an_error_naming_it(tmp_path, monkeypatch):
    missing = tmp_path / "no-such-out"
    monkeypatch.setenv(notebook.RESULTS, str(missing))
    with pytest.raises(ValueError, match="PIRID_RESULTS") as error:
        notebook.settings()
    assert str(missing) in str(error.value)
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv(notebook.RESULTS, str(tmp_path / "a-file"))
    with pytest.raises(ValueError, match="not an existing folder"):
        notebook.settings()


@pytest.mark.parametrize("mode, omp, expected", [("full", "1", 3), ("test", None, 3), ("test", "1", "kept")])
def test_torch_threads_follow_the_notebook_unless_the_test_runner_set_them(monkeypatch, mode, omp, expected):
    import torch

    before = torch.get_num_threads()
    monkeypatch.setenv("PIRID_NOTEBOOK_MODE", mode)
    if omp is None:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    else:
        monkeypatch.setenv("OMP_NUM_THREADS", omp)
    try:
        assert notebook.set_torch_threads(3) == (before if expected == "kept" else expected)
        assert torch.get_num_threads() == (before if expected == "kept" else expected)
    finally:
        torch.set_num_threads(before)
