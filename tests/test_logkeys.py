"""Log keys are defined once (pirid_lite.logkeys): every key a plot or table reads is written by a real run."""
from __future__ import annotations

import json

import pytest

from pirid_lite import datasets, logkeys, viz
from pirid_lite.config import get_config
from pirid_lite.method.losses import LOSS_TERMS
from pirid_lite.engine.runfiles import LOG
from pirid_lite.engine.trainer import Trainer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def written_keys(tmp_path_factory) -> set[str]:
    """The union of the log keys of short runs (with an evaluation every epoch) of ``pirid`` — whose log
    holds every other variant's keys: stage 2, prototype quality, memory NN accuracy, and (sampling by reliable
    prototype) what its batches were drawn by — and ``supervised``."""
    tiny = datasets.load("tiny", verbose=False)
    keys: set[str] = set()
    for variant in ("pirid", "supervised"):
        cfg = get_config("test", variant=variant, device="cpu", epochs=3, stage1_epochs=1, warmup_epochs=1,
                         lr_milestones=(2,), iters_per_epoch=2, eval_every=1, stage2_sampling="reliable-prototype")
        out = tmp_path_factory.mktemp(variant)
        Trainer(cfg, tiny, out, progress=False, log=lambda _: None).fit()
        for line in (out / LOG).read_text().splitlines():
            keys |= set(json.loads(line))
    return keys


def test_every_key_a_plot_reads_is_written_by_a_run(written_keys):
    assert viz.LOG_KEYS_READ, "viz.LOG_KEYS_READ is empty: the plots must declare what they read"
    assert set(viz.LOG_KEYS_READ) <= written_keys, sorted(set(viz.LOG_KEYS_READ) - written_keys)


def test_the_declared_keys_are_the_written_ones(written_keys):
    declared = {value for name, value in vars(logkeys).items() if name.isupper() and isinstance(value, str)}
    declared |= {logkeys.loss_key(term) for term in LOSS_TERMS} | set(logkeys.RETRIEVAL)
    # FALLBACK_INTRA_ONLY appears only when DBSCAN finds no prototype at all, RANK_DIGESTS only in runs over
    # several processes (tests/test_distributed.py reads it), ASSOCIATION_THRESHOLD only with camera-linkage
    # (tests/test_association.py reads it)
    assert written_keys - declared == set(), "a run writes a key that logkeys does not define"
    assert declared - written_keys <= {logkeys.FALLBACK_INTRA_ONLY, logkeys.RANK_DIGESTS,
                                       logkeys.ASSOCIATION_THRESHOLD}
