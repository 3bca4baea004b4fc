"""The committed notebooks as a reader sees them (issue 26, item 3): no printed line wider than the output
area (JupyterLab breaks it anywhere, even inside a word or a number), no table cut short by pandas ("…"),
the kernel the environment really has (so that opening a notebook does not mark it changed), and no widget
stub without a figure (a saved interactive view must still show one outside JupyterLab).

Each check is a function of one output or notebook, tested first on hand-made bad cells so that it can fail.
"""
from __future__ import annotations

import json
import platform
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted(Path(__file__).resolve().parents[1].glob("notebooks/*.ipynb"))
MAX_LINE = 110        # characters of a text output line that fit a ~1100-pixel JupyterLab output area
RICH = ("text/html", "image/png", "image/svg+xml", "image/jpeg", "text/markdown", "text/latex",
        "application/vnd.jupyter.widget-view+json")
WIDGET_STUB = re.compile(r"^\s*(interactive|VBox|HBox|Box|Output)\(children=")
# pandas' marks for a cut cell, row or column: "…" or "..." alone in a cell or ending a cell's text
HTML_CELL = re.compile(r"<t[dh][^>]*>(.*?)</t[dh]>", re.S)


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def shown_text(output: dict) -> str | None:
    """The text a reader sees for ``output``: a stream's text, or ``text/plain`` when the output has no
    richer form (a table's HTML, an image) that JupyterLab shows instead; None otherwise."""
    if output.get("output_type") == "stream":
        return _text(output.get("text", ""))
    data = output.get("data", {})
    if "text/plain" in data and not any(kind in data for kind in RICH):
        return _text(data["text/plain"])
    return None


def long_lines(output: dict, width: int = MAX_LINE) -> list[str]:
    text = shown_text(output)
    return [] if text is None else [line for line in text.splitlines() if len(line) > width]


def truncated_cells(output: dict) -> list[str]:
    """Cells of a pandas table (HTML, or the ``text/plain`` beside it) that pandas cut: a cell that is
    "…"/"..." (rows or columns left out: ``display.max_rows``/``max_columns``), or whose text ends with it
    (``display.max_colwidth``)."""
    data = output.get("data", {})
    html = _text(data.get("text/html", ""))
    found = []
    if "dataframe" in html:
        for cell in HTML_CELL.findall(html):
            cell = re.sub(r"<[^>]+>", "", cell).strip()
            if cell.endswith(("…", "...")):
                found.append(cell)
        plain = _text(data.get("text/plain", ""))
        found += [line for line in plain.splitlines() if line.rstrip().endswith(("…", "..."))]
    return found


def widget_stub_without_figure(outputs: list[dict]) -> bool:
    """A cell whose saved outputs hold a widget's stub ("interactive(children=…)", a widget view) but no
    image: outside JupyterLab it reads as plain text, with no figure."""
    stub = any(WIDGET_STUB.match(_text(o.get("data", {}).get("text/plain", "")))
               or "application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    image = any(kind in o.get("data", {}) for o in outputs for kind in ("image/png", "image/svg+xml", "image/jpeg"))
    return stub and not image


def env_kernel() -> dict:
    """Name, display name and language of the kernel this environment provides (what
    ``jupyter kernelspec list --json`` reports; the notebooks' kernelspec must match it exactly)."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().get_all_specs()
    assert "python3" in specs, f"the environment has no python3 kernel: {sorted(specs)}"
    spec = specs["python3"]["spec"]
    return {"display_name": spec["display_name"], "language": spec["language"], "name": "python3"}


def kernel_mismatches(metadata: dict, kernel: dict, python_version: str) -> list[str]:
    found = []
    if metadata.get("kernelspec") != kernel:
        found.append(f"kernelspec {metadata.get('kernelspec')} != the environment's {kernel}")
    info = metadata.get("language_info", {})
    if info.get("name") != "python" or info.get("version") != python_version:
        found.append(f"language_info {info.get('name')} {info.get('version')} != python {python_version}")
    return found


# ------------------------------------------------------------------------------------------ the checks fail
def _stream(text):
    return {"output_type": "stream", "name": "stdout", "text": text}


def test_long_line_check_fails_on_a_long_printed_line_only():
    assert long_lines(_stream("x" * 111 + "\nshort\n")) == ["x" * 111]
    assert long_lines(_stream("x" * 110 + "\n")) == []
    plain = {"output_type": "execute_result", "data": {"text/plain": ["y" * 120]}}
    assert long_lines(plain) == ["y" * 120]
    with_html = {"output_type": "execute_result", "data": {"text/plain": ["y" * 120], "text/html": ["<p>y</p>"]}}
    assert long_lines(with_html) == []          # JupyterLab shows the HTML


def test_truncation_check_fails_on_pandas_marks():
    import pandas as pd

    frame = pd.DataFrame({"target": ["a long target " * 8], "measured": [1.0]})
    with pd.option_context("display.max_colwidth", 50):
        cut = {"output_type": "execute_result", "data": {"text/html": frame._repr_html_(),
                                                         "text/plain": repr(frame)}}
    assert truncated_cells(cut)
    with pd.option_context("display.max_colwidth", None):
        whole = {"output_type": "execute_result", "data": {"text/html": frame._repr_html_(),
                                                           "text/plain": repr(frame)}}
    assert truncated_cells(whole) == []
    wide = pd.DataFrame({f"column {i}": [i] for i in range(40)})
    with pd.option_context("display.max_columns", 10):
        assert truncated_cells({"data": {"text/html": wide._repr_html_(), "text/plain": ""}})


def test_kernel_check_fails_on_another_display_name():
    kernel = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    good = {"kernelspec": dict(kernel), "language_info": {"name": "python", "version": "3.11.7"}}
    assert kernel_mismatches(good, kernel, "3.11.7") == []
    bad = {**good, "kernelspec": {**kernel, "display_name": "Python 3 (pirid_lite)"}}
    assert kernel_mismatches(bad, kernel, "3.11.7")
    assert kernel_mismatches(good, kernel, "3.12.1")


def test_widget_check_fails_on_a_stub_without_an_image():
    stub = {"output_type": "display_data", "data": {"text/plain": "interactive(children=(IntSlider(value=5),))"}}
    image = {"output_type": "display_data", "data": {"image/png": "iVBOR", "text/plain": "<Figure>"}}
    assert widget_stub_without_figure([stub])
    assert not widget_stub_without_figure([stub, image])
    assert not widget_stub_without_figure([_stream("interactive(children= is not a widget here\n")])


# ------------------------------------------------------------------------------------------ the notebooks
def _cells(notebook: Path):
    for index, cell in enumerate(json.loads(notebook.read_text())["cells"]):
        if cell["cell_type"] == "code":
            yield index, cell.get("outputs", [])


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_no_text_output_line_is_wider_than_the_output_area(notebook):
    bad = {index: found for index, outputs in _cells(notebook)
           if (found := [line for output in outputs for line in long_lines(output)])}
    assert not bad, f"{notebook.name}: cells with lines over {MAX_LINE} characters: {bad}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_no_table_is_truncated_by_pandas(notebook):
    bad = {index: found for index, outputs in _cells(notebook)
           if (found := [cell for output in outputs for cell in truncated_cells(output)])}
    assert not bad, f"{notebook.name}: pandas cut these cells: {bad}"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_the_kernelspec_is_the_environments_kernel(notebook):
    metadata = json.loads(notebook.read_text())["metadata"]
    assert kernel_mismatches(metadata, env_kernel(), platform.python_version()) == []


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_no_saved_widget_stub_without_a_figure(notebook):
    bad = [index for index, outputs in _cells(notebook) if widget_stub_without_figure(outputs)]
    assert not bad, f"{notebook.name}: cells {bad} saved a widget stub and no figure"
