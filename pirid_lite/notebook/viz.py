"""Figures for the notebooks and the README. Every ``plot_*``/figure function returns a matplotlib Figure
and, given ``path``, also saves it (PNG at 150 dpi; any suffix matplotlib knows). :func:`epoch_table`
(:func:`epoch_tables`), :func:`quality_summary`, :func:`lr_schedule_text`, :func:`grouping_summary` and :func:`linkage_scale_sweep` are
the text and tables that go with them; text meant for a notebook's output keeps its lines short
(:func:`wrap_parts`), since JupyterLab breaks a long output line anywhere, even inside a number.

A run's per-epoch log (``log.jsonl``, :meth:`pirid_lite.engine.runfiles.RunFiles.log`) is read by the names of
:mod:`pirid_lite.logkeys` only; :data:`LOG_KEYS_READ` lists every key a function here reads.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import logkeys
from ..method.losses import LOSS_TERMS
from .viz_prototypes import (  # noqa: F401  (the prototypes' figures, under their old names here)
    ASSOCIATION_CURVES, PROTOTYPE_QUALITY_SHOWN, PROTOTYPE_STATS, GROUPING_SUMMARY_ROWS, plot_eps_sweep,
    plot_prototype_setting, plot_prototype_quality_by_setting, stage2_epochs, plot_prototype_epoch,
    prototype_members, rule_breaking_prototypes, prototype_gallery, grouping_summary, linkage_scale_sweep,
    plot_linkage_scale, plot_association_curves, _save, FIGURE_WIDTH, panel_grid, figure_legend, integer_epochs,
    three_groupings)

R1, R5, R10, MAP = logkeys.RETRIEVAL                      # logged every ``eval_every`` epochs (when > 0)
LOSS_KEYS = tuple(logkeys.loss_key(term) for term in LOSS_TERMS)   # loss_intra, loss_inter_id, loss_triplet
EPOCH_TABLE_COLUMNS = (logkeys.EPOCH, logkeys.STAGE, logkeys.LR, *LOSS_KEYS, *PROTOTYPE_STATS,
                       logkeys.MEMORY_NN_ACCURACY, MAP, logkeys.SECONDS)
# epoch_tables: the same columns as two tables narrow enough for a notebook page
TRAINING_TABLE_COLUMNS = (logkeys.EPOCH, logkeys.STAGE, logkeys.LR, *LOSS_KEYS, MAP, logkeys.SECONDS)
PROTOTYPE_TABLE_COLUMNS = (logkeys.EPOCH, *PROTOTYPE_STATS, logkeys.MEMORY_NN_ACCURACY)

# every log key a function of this module reads (a test checks that real runs write each of them)
LOG_KEYS_READ: tuple[str, ...] = tuple(dict.fromkeys((
    logkeys.EPOCH, logkeys.STAGE, logkeys.LR, logkeys.SECONDS, *LOSS_KEYS, logkeys.INTRA_ACCURACY,
    *PROTOTYPE_STATS, logkeys.PAIRWISE_PRECISION, logkeys.PAIRWISE_RECALL, logkeys.NUM_TRUE_IDENTITIES,
    logkeys.MEMORY_NN_ACCURACY, MAP, R1, logkeys.SAME_CAMERA_PROTOTYPES, logkeys.SAMPLED_BY,
    logkeys.RELIABLE_SHARE, logkeys.PROTOTYPE_SAMPLED_SHARE, logkeys.SAMPLING_PRECISION)))


def camera_sample_grid(dataset, n_identities: int = 6, path=None, seed: int = 0):
    """Rows = people seen by several cameras (hidden truth, read for display only), columns = cameras."""
    import matplotlib.pyplot as plt
    from PIL import Image

    truth = dataset.hidden_truth.reveal_per_image(reason="sample grid (display only)")
    cams = np.array([item.camid for item in dataset.train])
    num_cameras = dataset.ics.num_cameras
    people = np.unique(truth)
    seen = np.array([len(np.unique(cams[truth == p])) for p in people])
    rng = np.random.default_rng(seed)
    candidates = people[seen == seen.max()] if (seen >= 3).sum() < n_identities else people[seen >= 3]
    chosen = rng.choice(candidates, size=min(n_identities, len(candidates)), replace=False)
    fig, axes = plt.subplots(len(chosen), num_cameras, figsize=(1.1 * num_cameras, 2.1 * len(chosen)), squeeze=False)
    for row, person in zip(axes, chosen):
        for cam, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            hits = np.flatnonzero((truth == person) & (cams == cam))
            if len(hits):
                ax.imshow(Image.open(dataset.train[hits[0]].path).convert("RGB"))
        row[0].set_ylabel(f"person {person}", fontsize=8)
    for cam, ax in enumerate(axes[0]):
        ax.set_title(f"camera {cam + 1}", fontsize=9)
    fig.suptitle(f"{dataset.name}: the same people (rows) through different cameras (columns)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return fig
def person_across_cameras(dataset, person: int, max_images: int = 10, path=None):
    """All training images of one hidden ``person`` (up to ``max_images``), sorted by camera, then by the
    global intra-camera ID j each carries (the hidden truth is read for display only)."""
    import matplotlib.pyplot as plt
    from PIL import Image

    truth = dataset.hidden_truth.reveal_per_image(reason="person browser (display only)")
    cams = np.array([item.camid for item in dataset.train])
    labels = np.array([item.label for item in dataset.train])
    mine = np.flatnonzero(truth == person)
    shown = mine[np.lexsort((labels[mine], cams[mine]))][:max_images]
    fig, axes = plt.subplots(1, max(1, len(shown)), figsize=(1.1 * max(1, len(shown)), 2.5), squeeze=False)
    for ax in axes[0]:
        ax.axis("off")
    for ax, i in zip(axes[0], shown):
        ax.imshow(Image.open(dataset.train[i].path).convert("RGB"))
        ax.set_title(f"cam {cams[i] + 1}\nj = {labels[i]}", fontsize=8)
    fig.suptitle(f"hidden person {person}", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return fig

# ---------------------------------------------------------------------------------------------------
# Training, prototype and Figure 3 plots (used by the notebooks; data comes from pirid_lite runs).

def epoch_table(log: "pd.DataFrame") -> "pd.DataFrame":
    """The columns of a run's per-epoch log a reader wants — epoch, stage, learning rate, the loss terms,
    the prototype statistics, memory NN accuracy, mAP and the cumulative seconds (those the log has) —
    formatted for display: lr in scientific notation (a value like 3.5e-04 would round to 0.0), counts
    as integers, the other values to 3 decimals and seconds to 1."""
    import pandas as pd

    table = log[[c for c in EPOCH_TABLE_COLUMNS if c in log]].copy()
    for col in table:
        if col == logkeys.LR:
            table[col] = table[col].map(lambda v: "" if pd.isna(v) else f"{v:.1e}")
        elif col in (logkeys.EPOCH, logkeys.STAGE, logkeys.NUM_PROTOTYPES):
            table[col] = table[col].astype("Int64")
        elif col == logkeys.SECONDS:
            table[col] = table[col].round(1)
        else:
            table[col] = table[col].astype(float).round(3)
    return table.reset_index(drop=True)


def epoch_tables(log: "pd.DataFrame") -> tuple["pd.DataFrame", "pd.DataFrame"]:
    """:func:`epoch_table` as two tables indexed by epoch, each narrow enough for a notebook page (all of
    :func:`epoch_table` in one is wider than a 1400-pixel window): the training columns (stage, lr, the loss
    terms, mAP, seconds) and the prototype columns (prototypes, noise share, purity, pairwise F, memory NN
    accuracy) of the epochs that formed prototypes — an empty table for a run without stage 2."""
    table = epoch_table(log).set_index(logkeys.EPOCH)
    training = table[[c for c in TRAINING_TABLE_COLUMNS if c in table]]
    prototypes = table[[c for c in PROTOTYPE_TABLE_COLUMNS if c in table]]
    if logkeys.NUM_PROTOTYPES in prototypes:
        prototypes = prototypes[prototypes[logkeys.NUM_PROTOTYPES].notna()]
    else:
        prototypes = prototypes.iloc[0:0]
    return training, prototypes


SAMPLING_COLUMNS = (logkeys.SAMPLED_BY, logkeys.NUM_PROTOTYPES, logkeys.RELIABLE_SHARE,
                    logkeys.PROTOTYPE_SAMPLED_SHARE, logkeys.SAMPLING_PRECISION, logkeys.PAIRWISE_PRECISION)


def sampling_table(log: "pd.DataFrame") -> "pd.DataFrame":
    """Per stage-2 epoch of a run: what its P-K sampler drew by (``stage2_sampling``), the share of prototypes
    trusted and of images drawn by prototype (truth-free), and — hidden truth, logged only — the pairwise
    precision of the prototypes the batches were drawn by beside that of all prototypes."""
    table = log[log[logkeys.STAGE] == 2].set_index(logkeys.EPOCH)
    table = table[[c for c in SAMPLING_COLUMNS if c in table]].copy()
    if logkeys.NUM_PROTOTYPES in table:
        table[logkeys.NUM_PROTOTYPES] = table[logkeys.NUM_PROTOTYPES].astype("Int64")
    return table.round(3)


def wrap_parts(parts, width: int | None = None, sep: str = ", ") -> str:
    """``parts`` joined by ``sep``; with ``width``, a new line starts before a part that would make the line
    longer than ``width`` characters, so a line never breaks inside a part (a number and its name)."""
    parts = [str(part) for part in parts]
    if width is None:
        return sep.join(parts)
    lines, line = [], ""
    for part in parts:
        # room for the separator that ends the line when the next part starts a new one
        if line and len(line) + len(sep) + len(part) + len(sep.rstrip()) > width:
            lines.append(line + sep.rstrip())
            line = part
        else:
            line = part if not line else line + sep + part
    lines.append(line)
    return "\n".join(lines)


def table_text(table: "pd.DataFrame", width: int = 110, **to_string) -> str:
    """``table.to_string(**to_string)`` in lines of at most ``width`` characters: when the whole table is
    wider, its columns are split into consecutive blocks, each printed with the index and separated by a
    blank line (pandas' own ``line_width`` marks such breaks with a backslash; this keeps whole columns).
    A single column wider than ``width`` is printed as it is."""
    text = table.to_string(**to_string)
    if max((len(line) for line in text.splitlines()), default=0) <= width or table.shape[1] <= 1:
        return text
    blocks, start = [], 0
    while start < table.shape[1]:
        stop = start + 1
        while stop < table.shape[1]:
            trial = table.iloc[:, start:stop + 1].to_string(**to_string)
            if max(len(line) for line in trial.splitlines()) > width:
                break
            stop += 1
        blocks.append(table.iloc[:, start:stop].to_string(**to_string))
        start = stop
    return "\n\n".join(blocks)


def claims_markdown(claims: "pd.DataFrame") -> str:
    """:func:`pirid_lite.experiments.results.claims` as a Markdown table: every target in full (a pandas
    table cuts long text at ``display.max_colwidth`` with "…"), its measured value and whether it holds."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| target | measured | holds |", "|:--|:--|:--|"]
    lines += [f"| {cell(row.target)} | {cell(row.measured)} | {'yes' if row.holds else '**no**'} |"
              for row in claims.itertuples(index=False)]
    return "\n".join(lines)


def lr_schedule_text(lrs, width: int | None = 90) -> str:
    """The learning rate of each epoch (``lrs[e]`` for 0-based epoch ``e``), with runs of equal rates collapsed
    and epochs counted from 1 as the log does: ``1: 3.5e-05, 2: 1.9e-04, 3-15: 3.5e-04, …`` (scientific
    notation: 3.5e-05 would round to 0.0), wrapped by :func:`wrap_parts`."""
    parts, start = [], 0
    labels = [f"{lr:.1e}" for lr in lrs]
    for epoch in range(1, len(labels) + 1):
        if epoch == len(labels) or labels[epoch] != labels[start]:
            span = f"{start + 1}" if epoch - 1 == start else f"{start + 1}-{epoch}"
            parts.append(f"{span}: {labels[start]}")
            start = epoch
    return wrap_parts(parts, width)


def quality_summary(quality, width: int | None = None) -> str:
    """One line for a prototype-quality record (a dict from :func:`pirid_lite.method.prototypes.prototype_quality`
    or a stage-2 row of a log): prototypes against true people, noise, purity, pairwise P/R/F and, when
    present, the memory's cross-camera NN accuracy. With ``width``, several lines of at most ``width``
    characters, broken between the values (:func:`wrap_parts`)."""
    def get(key):
        value = quality.get(key) if hasattr(quality, "get") else None
        return None if value is None or value != value else value  # None or NaN: not there

    count, people = get(logkeys.NUM_PROTOTYPES), get(logkeys.NUM_TRUE_IDENTITIES)
    parts = [("no" if count is None else f"{count:.0f}") + " prototypes" + (f" for {people:.0f} people" if people else "")]
    named = ((logkeys.NOISE_SHARE, "noise"), (logkeys.PURITY, "purity"),
             (logkeys.PAIRWISE_PRECISION, "pairwise precision"), (logkeys.PAIRWISE_RECALL, "recall"),
             (logkeys.PAIRWISE_F, "F"), (logkeys.MEMORY_NN_ACCURACY, "memory NN accuracy"))
    parts += [f"{name} {get(key):.3f}" for key, name in named if get(key) is not None]
    return wrap_parts(parts, width)


def plot_training_curves(log: "pd.DataFrame", title: str = "", path=None):
    """Per-epoch curves of a run's ``log.jsonl``: the loss terms, prototypes, prototype quality, retrieval."""
    import matplotlib.pyplot as plt

    panels = [("losses", list(LOSS_KEYS)), ("prototypes", [logkeys.NUM_PROTOTYPES]),
              ("prototype quality", [logkeys.PURITY, logkeys.PAIRWISE_F, logkeys.NOISE_SHARE]),
              ("retrieval (%)", [MAP, R1])]
    panels = [(name, [c for c in cols if c in log]) for name, cols in panels]
    panels = [(name, cols) for name, cols in panels if cols and log[cols].notna().any().any()]
    fig, axes = panel_grid(len(panels), height=2.6)
    for ax, (name, cols) in zip(axes, panels):
        for col in cols:
            rows = log[[logkeys.EPOCH, col]].dropna()
            ax.plot(rows[logkeys.EPOCH], rows[col], marker="o", ms=3, label=col)
        stage2 = log.loc[log[logkeys.STAGE] == 2, logkeys.EPOCH]
        if len(stage2):
            ax.axvspan(stage2.min() - 0.5, log[logkeys.EPOCH].max() + 0.5, color="0.92", zorder=0)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        integer_epochs(ax)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)   # beside, off the data
    fig.suptitle(title or "training (grey = stage 2: all three losses)")
    _save(fig, path)
    return fig


def plot_intra_camera_learning(log: "pd.DataFrame", path=None):
    """Stage 1 read from a run's log: L_intra (Eq. 3) and the intra-camera ID accuracy of the training
    batches (is the top-scoring ID of the image's own camera its own? Eq. 2) per epoch."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    axes[0].plot(log[logkeys.EPOCH], log[logkeys.loss_key("intra")], marker="o")
    axes[0].set(title="$L_{intra}$ (Eq. 3)", xlabel="epoch")
    axes[1].plot(log[logkeys.EPOCH], log[logkeys.INTRA_ACCURACY], marker="o", color="tab:green")
    axes[1].set(title="intra-camera ID accuracy (train batches)", xlabel="epoch", ylim=(0, 1))
    for ax in axes:
        integer_epochs(ax)
    fig.tight_layout()
    _save(fig, path)
    return fig


def tsne_embedding(x, seed: int = 0, perplexity: float = 20.0) -> np.ndarray:
    """(n, 2) t-SNE of the rows of ``x``: scikit-learn's Barnes-Hut t-SNE with PCA initialisation and
    ``random_state=seed``, on one thread, so that the core count cannot change it (its gradient runs in
    OpenMP threads; in this environment 1, 2 and 4 threads gave the same layout, which scikit-learn does
    not promise). The same rows in the same order give the same layout on every run; another order of the
    same rows gives another layout (hence the sorting in :func:`plot_tsne_panels`), and another CPU or BLAS
    build can round differently (the layout is then similar, not identical)."""
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    x = np.asarray(x, dtype=np.float32)
    with threadpool_limits(limits=1):
        return TSNE(n_components=2, perplexity=min(perplexity, len(x) - 1), init="pca", random_state=seed,
                    n_jobs=1).fit_transform(x)


def plot_tsne_panels(panels: dict, n_identities: int = 20, seed: int = 0, path=None, perplexity: float = 20.0,
                     title: str | None = None):
    """Figure 3: t-SNE of the same ``n_identities`` random test identities in several feature spaces.

    ``panels`` maps a title to ``(features, pids, camids)``; colour = identity, marker = camera. ``title``
    is added to the figure's suptitle (e.g. the start the networks were trained from). The identities are
    drawn with ``seed``; their images enter t-SNE sorted by identity, camera and feature values
    (:func:`tsne_embedding`, one thread), so the layout depends neither on the order in which the features
    were saved nor on the core count.
    """
    import matplotlib.pyplot as plt

    first_pids = next(iter(panels.values()))[1]
    candidates = np.unique(first_pids[first_pids > 0])
    chosen = np.random.default_rng(seed).choice(candidates, size=min(n_identities, len(candidates)), replace=False)
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, len(chosen)))
    markers = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "8", "d", "H"]
    size = min(5.0, FIGURE_WIDTH / len(panels))
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size + 0.8), squeeze=False)
    for ax, (panel_title, (features, pids, camids)) in zip(axes[0], panels.items()):
        pids, camids = np.asarray(pids), np.asarray(camids)
        rows = np.flatnonzero(np.isin(pids, chosen))
        x = np.asarray(features, dtype=np.float32)[rows]
        order = np.lexsort(np.vstack([x.T[::-1], camids[rows], pids[rows]]))   # identity, camera, then values
        rows, x = rows[order], x[order]
        embedded = tsne_embedding(x, seed=seed, perplexity=perplexity)
        for i, pid in enumerate(chosen):
            for cam in np.unique(camids[rows]):
                sel = (pids[rows] == pid) & (camids[rows] == cam)
                if sel.any():
                    ax.scatter(embedded[sel, 0], embedded[sel, 1], color=colours[i], marker=markers[cam % len(markers)],
                               s=28, edgecolors="k", linewidths=0.3)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    cams = np.unique(np.concatenate([p[2] for p in panels.values()]))
    handles = [plt.Line2D([], [], color="0.3", marker=markers[c % len(markers)], ls="", label=f"camera {c + 1}")
               for c in cams]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    suptitle = f"t-SNE of {len(chosen)} random test identities (colour = identity, marker = camera)"
    fig.suptitle(f"{title}\n{suptitle}" if title else suptitle, fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.92 if title else 0.95))
    _save(fig, path)
    return fig
