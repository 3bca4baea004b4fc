"""The notebooks call the package instead of copying it: no hand-built mapping of the config onto the
prototype functions, no re-computed batch count, no log key typed in as a string."""
from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest

from pirid_lite import logkeys
from pirid_lite.config import PiridConfig

NOTEBOOKS = sorted(Path(__file__).resolve().parents[1].glob("notebooks/*.ipynb"))
CONFIG_FIELDS = {f.name for f in dataclasses.fields(PiridConfig)}
GROUPING_FUNCTIONS = {"form_prototypes", "linkage_prototypes"}
LOG_KEYS = {v for k, v in vars(logkeys).items() if k.isupper() and isinstance(v, str)}


def code_cells(notebook: Path):
    for index, cell in enumerate(json.loads(notebook.read_text())["cells"]):
        if cell["cell_type"] == "code":
            source = "".join(cell["source"])
            yield index, ast.parse("\n".join(l for l in source.splitlines() if not l.lstrip().startswith(("%", "!"))))


def hand_mapped_settings(tree: ast.AST) -> list[str]:
    """``form_prototypes(..., eps=cfg.dbscan_eps, ...)``: a config field passed by hand to a grouping."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in GROUPING_FUNCTIONS:
            found += [f"{kw.arg}=….{kw.value.attr}" for kw in node.keywords
                      if isinstance(kw.value, ast.Attribute) and kw.value.attr in CONFIG_FIELDS]
    return found


def test_the_check_catches_a_hand_built_mapping():
    tree = ast.parse("p = form_prototypes(x, cams, eps=cpu.dbscan_eps, metric='jaccard')")
    assert hand_mapped_settings(tree) == ["eps=….dbscan_eps"]
    assert hand_mapped_settings(ast.parse("p = form_prototypes(x, cams, eps=0.6)")) == []


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_no_notebook_maps_the_config_onto_a_grouping_by_hand(notebook):
    bad = {index: found for index, tree in code_cells(notebook) if (found := hand_mapped_settings(tree))}
    assert not bad, (f"{notebook.name}: cells {bad} pass config fields to a grouping by hand; call "
                     "pirid_lite.method.groupings.associate(bank, label_camera, cfg) instead")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_no_notebook_types_a_log_key_or_recomputes_the_batches(notebook):
    for index, tree in code_cells(notebook):
        for node in ast.walk(tree):
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                assert node.slice.value not in LOG_KEYS, (f"{notebook.name} cell {index}: log key "
                                                         f"{node.slice.value!r} typed in; use pirid_lite.logkeys")
            if isinstance(node, ast.Attribute) and node.attr == "iters_per_epoch":
                raise AssertionError(f"{notebook.name} cell {index} recomputes the batches of an epoch; use "
                                     "pirid_lite.engine.training.batches_per_epoch")
