"""Figures for the notebooks and the README. Every ``plot_*``/figure function returns a matplotlib Figure
and, given ``path``, also saves it (PNG at 150 dpi; any suffix matplotlib knows). :func:`epoch_table`,
:func:`quality_summary`, :func:`lr_schedule_text`, :func:`grouping_summary` and :func:`linkage_scale_sweep` are
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

R1, R5, R10, MAP = logkeys.RETRIEVAL                      # logged every ``eval_every`` epochs (when > 0)
LOSS_KEYS = tuple(logkeys.loss_key(term) for term in LOSS_TERMS)   # loss_intra, loss_inter_id, loss_triplet
PROTOTYPE_STATS = (logkeys.NUM_PROTOTYPES, logkeys.NOISE_SHARE, logkeys.PURITY, logkeys.PAIRWISE_F)
PROTOTYPE_QUALITY_SHOWN = (logkeys.PURITY, logkeys.PAIRWISE_F, logkeys.NOISE_SHARE, logkeys.MEMORY_NN_ACCURACY)
EPOCH_TABLE_COLUMNS = (logkeys.EPOCH, logkeys.STAGE, logkeys.LR, *LOSS_KEYS, *PROTOTYPE_STATS,
                       logkeys.MEMORY_NN_ACCURACY, MAP, logkeys.SECONDS)

# every log key a function of this module reads (a test checks that real runs write each of them)
LOG_KEYS_READ: tuple[str, ...] = tuple(dict.fromkeys((
    logkeys.EPOCH, logkeys.STAGE, logkeys.LR, logkeys.SECONDS, *LOSS_KEYS, logkeys.INTRA_ACCURACY,
    *PROTOTYPE_STATS, logkeys.PAIRWISE_PRECISION, logkeys.PAIRWISE_RECALL, logkeys.NUM_TRUE_IDENTITIES,
    logkeys.MEMORY_NN_ACCURACY, MAP, R1, logkeys.SAME_CAMERA_PROTOTYPES)))
# the per-epoch curves of notebook 03's association section (columns of results.prototype_quality_per_epoch)
ASSOCIATION_CURVES = (logkeys.PAIRWISE_F, logkeys.PURITY, logkeys.NUM_PROTOTYPES, logkeys.SAME_CAMERA_PROTOTYPES)


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


def wrap_parts(parts, width: int | None = None, sep: str = ", ") -> str:
    """``parts`` joined by ``sep``; with ``width``, a new line starts before a part that would make the line
    longer than ``width`` characters, so a line never breaks inside a part (a number and its name)."""
    parts = [str(part) for part in parts]
    if width is None:
        return sep.join(parts)
    lines, line = [], ""
    for part in parts:
        if line and len(line) + len(sep) + len(part) > width:
            lines.append(line + sep.rstrip())
            line = part
        else:
            line = part if not line else line + sep + part
    lines.append(line)
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
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (name, cols) in zip(axes[0], panels):
        for col in cols:
            rows = log[[logkeys.EPOCH, col]].dropna()
            ax.plot(rows[logkeys.EPOCH], rows[col], marker="o", ms=3, label=col)
        stage2 = log.loc[log[logkeys.STAGE] == 2, logkeys.EPOCH]
        if len(stage2):
            ax.axvspan(stage2.min() - 0.5, log[logkeys.EPOCH].max() + 0.5, color="0.92", zorder=0)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.suptitle(title or "training (grey = stage 2: all three losses)")
    fig.tight_layout()
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
    fig.tight_layout()
    _save(fig, path)
    return fig


def tsne_embedding(x, seed: int = 0, perplexity: float = 20.0) -> np.ndarray:
    """(n, 2) t-SNE of the rows of ``x``: scikit-learn's Barnes-Hut t-SNE with PCA initialisation and
    ``random_state=seed``, run on one thread. The thread count matters: the Barnes-Hut gradient is summed
    over threads in an order that depends on their number, and t-SNE amplifies the rounding difference into
    another layout. On one thread the same rows in the same order give the same layout on every run and
    every core count; another CPU or BLAS build can still round differently (the layout is then similar,
    not identical)."""
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
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5.0), squeeze=False)
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
        ax.set_title(panel_title)
        ax.set_xticks([])
        ax.set_yticks([])
    cams = np.unique(np.concatenate([p[2] for p in panels.values()]))
    handles = [plt.Line2D([], [], color="0.3", marker=markers[c % len(markers)], ls="", label=f"camera {c + 1}")
               for c in cams]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
    suptitle = f"t-SNE of {len(chosen)} random test identities (colour = identity, marker = camera)"
    fig.suptitle(f"{title}\n{suptitle}" if title else suptitle)
    fig.tight_layout(rect=(0, 0.06, 1, 0.93 if title else 0.95))
    _save(fig, path)
    return fig


def plot_eps_sweep(sweep: "pd.DataFrame", paper_eps: float = 0.6, path=None):
    """Prototype statistics against DBSCAN's eps, one line per distance (``sweep`` from
    :func:`pirid_lite.method.prototypes.eps_sweep`); the paper's 0.6 marked."""
    import matplotlib.pyplot as plt

    cols = [c for c in PROTOTYPE_STATS if c in sweep]
    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.2), squeeze=False)
    for ax, col in zip(axes[0], cols):
        for metric, rows in sweep.groupby("metric"):
            ax.plot(rows["eps"], rows[col], marker="o", ms=3, label=metric)
        if col == logkeys.NUM_PROTOTYPES and logkeys.NUM_TRUE_IDENTITIES in sweep:
            ax.axhline(sweep[logkeys.NUM_TRUE_IDENTITIES].iloc[0], color="k", ls=":", label="true identities")
        ax.axvline(paper_eps, color="crimson", ls="--", lw=1, label="paper eps = 0.6")
        ax.set_xlabel("eps")
        ax.set_title(col)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_prototype_setting(assignment, true_identity_per_id, sweep: "pd.DataFrame", eps: float, distance: str,
                           cannot_link: bool = False, path=None):
    """One DBSCAN setting on a bank of ID centroids. Left: its prototypes (``assignment`` = S') by size,
    largest first, green when all member IDs are one hidden person (the truth is read for display only);
    right: pairwise F and noise share of the eps ``sweep`` (:func:`pirid_lite.method.prototypes.eps_sweep`) for
    ``distance``, with ``eps`` marked."""
    import matplotlib.pyplot as plt

    assignment = np.asarray(assignment)
    truth = np.asarray(true_identity_per_id)
    num_prototypes = int(assignment.max()) + 1 if (assignment >= 0).any() else 0
    sizes = np.bincount(assignment[assignment >= 0], minlength=num_prototypes)
    pure = np.array([len(np.unique(truth[assignment == y])) == 1 for y in range(num_prototypes)], dtype=bool)
    order = np.argsort(-sizes, kind="stable")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    axes[0].bar(np.arange(len(order)), sizes[order], color=np.where(pure[order], "tab:green", "tab:red"), width=1.0)
    axes[0].set(title=f"{num_prototypes} prototypes by size (green: one hidden person)",
                xlabel="prototype (largest first)", ylabel="IDs")
    curve = sweep[sweep["metric"] == distance]
    axes[1].plot(curve["eps"], curve[logkeys.PAIRWISE_F], marker="o", label="pairwise F (eps sweep)")
    axes[1].plot(curve["eps"], curve[logkeys.NOISE_SHARE], marker=".", label="noise share")
    axes[1].axvline(eps, color="k", ls="--", lw=1)
    axes[1].set(title=f"{distance} distance" + (" (sweep without cannot-link)" if cannot_link else ""),
                xlabel="eps", ylim=(0, 1))
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_prototype_quality_by_setting(logs: "pd.DataFrame", path=None):
    """Stage-2 prototype statistics per epoch, mean over seeds with a ±1 std band, one line per setting
    (``logs`` from :func:`pirid_lite.experiments.results.epoch_logs`; the setting is the run's tag, '' = default)."""
    import matplotlib.pyplot as plt

    cols = [c for c in PROTOTYPE_STATS if c in logs]
    stage2 = logs[logs[logkeys.STAGE] == 2].assign(setting=lambda d: d["tag"].replace("", "default"))
    stats = stage2.groupby(["setting", logkeys.EPOCH])[cols].agg(["mean", "std"])
    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.2), squeeze=False)
    for ax, col in zip(axes[0], cols):
        for setting, rows in stats.groupby(level="setting"):
            epochs = rows.index.get_level_values(logkeys.EPOCH)
            mean, std = rows[(col, "mean")], rows[(col, "std")].fillna(0.0)
            ax.plot(epochs, mean, marker="o", ms=3, label=setting)
            ax.fill_between(epochs, mean - std, mean + std, alpha=0.15)
        if col == logkeys.NUM_PROTOTYPES and logkeys.NUM_TRUE_IDENTITIES in stage2:
            ax.axhline(stage2[logkeys.NUM_TRUE_IDENTITIES].iloc[0], color="k", ls=":", label="true identities")
        ax.set(xlabel="epoch", title=col)
        ax.legend(fontsize=8)
    fig.suptitle("prototypes against the hidden ground truth, per stage-2 epoch (mean ± std over seeds)")
    fig.tight_layout()
    _save(fig, path)
    return fig


def stage2_epochs(log: "pd.DataFrame") -> list[int]:
    """The epochs of a run's log that formed prototypes (a stage-2 epoch with a logged clustering)."""
    if logkeys.NUM_PROTOTYPES not in log:
        return []
    return [int(e) for e in log.loc[log[logkeys.NUM_PROTOTYPES].notna(), logkeys.EPOCH]]


def plot_prototype_epoch(log: "pd.DataFrame", epoch: int, path=None):
    """One run's stage-2 prototype diagnostics (``log.jsonl`` as a DataFrame) over the epochs, with ``epoch``
    marked: left, purity / pairwise F / noise share and the memory's cross-camera NN accuracy (when
    logged); right, the number of prototypes against the number of true people."""
    import matplotlib.pyplot as plt

    stage2 = log[log[logkeys.EPOCH].isin(stage2_epochs(log))]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    for col in PROTOTYPE_QUALITY_SHOWN:
        if col in stage2 and stage2[col].notna().any():
            axes[0].plot(stage2[logkeys.EPOCH], stage2[col], marker="o", ms=3, label=col)
            at = stage2.loc[stage2[logkeys.EPOCH] == epoch, col]
            if len(at):
                axes[0].plot([epoch], at, marker="o", ms=9, mfc="none", mec="k")
    axes[0].set(title="prototype quality (hidden truth, log only)", xlabel="epoch", ylim=(0, 1.02))
    if len(stage2):
        axes[1].plot(stage2[logkeys.EPOCH], stage2[logkeys.NUM_PROTOTYPES], marker="o", ms=3, color="tab:purple",
                     label="prototypes")
    if logkeys.NUM_TRUE_IDENTITIES in stage2 and stage2[logkeys.NUM_TRUE_IDENTITIES].notna().any():
        axes[1].axhline(stage2[logkeys.NUM_TRUE_IDENTITIES].dropna().iloc[0], color="k", ls=":", label="true people")
    axes[1].set(title="number of prototypes", xlabel="epoch")
    for ax in axes:
        ax.axvline(epoch, color="crimson", ls="--", lw=1)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return fig


def prototype_members(dataset, assignment, n_prototypes: int = 5, max_members: int = 6, seed: int = 0, path=None):
    """Rows = randomly chosen prototypes, columns = one training image of each member ID (with its camera)."""
    import matplotlib.pyplot as plt
    from PIL import Image

    assignment = np.asarray(assignment)
    prototype_ids = np.unique(assignment[assignment >= 0])
    rng = np.random.default_rng(seed)
    chosen = rng.choice(prototype_ids, size=min(n_prototypes, len(prototype_ids)), replace=False)
    first_image = {}
    for item in dataset.train:  # one image per intra-camera ID
        first_image.setdefault(item.label, item)
    fig, axes = plt.subplots(len(chosen), max_members, figsize=(1.3 * max_members, 2.4 * len(chosen)), squeeze=False)
    for row, proto in zip(axes, chosen):
        members = np.flatnonzero(assignment == proto)[:max_members]
        for ax in row:
            ax.axis("off")
        for ax, label in zip(row, members):
            item = first_image[label]
            ax.imshow(Image.open(item.path).convert("RGB"))
            ax.set_title(f"ID {label}\ncam {item.camid + 1}", fontsize=8)
        row[0].text(-0.35, 0.5, f"prototype {proto}\n({(assignment == proto).sum()} IDs)", transform=row[0].transAxes,
                    ha="right", va="center", fontsize=9)
    fig.suptitle("prototypes (rows) and one image of each member intra-camera ID")
    fig.tight_layout()
    _save(fig, path)
    return fig


# ---------------------------------------------------------------------------------------------------
# One ID per camera: DBSCAN's prototypes against the camera-constrained association (notebook 03).

def rule_breaking_prototypes(assignment, cameras) -> np.ndarray:
    """The prototypes of ``assignment`` (S', −1 = noise) that hold two or more IDs of one camera — each is
    certainly wrong, since ICS labels two IDs of one camera as two people — smallest first (ties by id).
    Their number is :func:`pirid_lite.method.association.same_camera_prototypes`."""
    assignment, cameras = np.asarray(assignment, dtype=np.int64), np.asarray(cameras, dtype=np.int64)
    broken = [y for y in np.unique(assignment[assignment >= 0])
              if len(np.unique(cameras[assignment == y])) < (assignment == y).sum()]
    sizes = np.array([(assignment == y).sum() for y in broken], dtype=np.int64)
    return np.asarray(broken, dtype=np.int64)[np.lexsort((broken, sizes))] if broken else np.zeros(0, np.int64)


def prototype_gallery(dataset, assignment, prototypes, true_identity_per_id, max_members: int = 10, path=None):
    """Rows = the given ``prototypes`` of ``assignment``; columns = one training image of each member ID,
    sorted by camera, titled with its ID j, camera and hidden person (the truth is read for display only).
    A camera that appears twice in a row is drawn in red: two IDs of one camera are two people, so such a
    prototype is wrong whatever the truth says."""
    import matplotlib.pyplot as plt
    from PIL import Image

    assignment = np.asarray(assignment)
    truth = np.asarray(true_identity_per_id)
    label_camera = np.asarray(dataset.ics.label_camera)
    first_image = {}
    for item in dataset.train:  # one image per intra-camera ID
        first_image.setdefault(item.label, item)
    prototypes = [int(y) for y in np.atleast_1d(prototypes)]
    rows = [np.flatnonzero(assignment == y) for y in prototypes]
    rows = [members[np.lexsort((members, label_camera[members]))] for members in rows]
    columns = max(1, min(max_members, max((len(m) for m in rows), default=1)))
    fig, axes = plt.subplots(len(rows), columns, figsize=(1.25 * columns + 1.6, 2.5 * len(rows)), squeeze=False)
    for row, proto, members in zip(axes, prototypes, rows):
        cams = label_camera[members]
        repeated = {c for c in cams.tolist() if (cams == c).sum() > 1}
        for ax in row:
            ax.axis("off")
        for ax, label in zip(row, members[:columns]):
            cam = int(label_camera[label])
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.imshow(Image.open(first_image[int(label)].path).convert("RGB"))
            colour = "crimson" if cam in repeated else "black"
            for side in ax.spines.values():
                side.set_edgecolor(colour if cam in repeated else "0.8")
                side.set_linewidth(3 if cam in repeated else 0.5)
            ax.set_title(f"ID {label}\ncam {cam + 1}\nperson {truth[label]}", fontsize=8, color=colour,
                         fontweight="bold" if cam in repeated else "normal")
        more = f", {len(members) - columns} not shown" if len(members) > columns else ""
        row[0].text(-0.25, 0.5, f"prototype {proto}\n{len(members)} IDs,\n{len(np.unique(cams))} cameras{more}",
                    transform=row[0].transAxes, ha="right", va="center", fontsize=9)
    fig.suptitle("one image per member ID (red: a camera that appears twice)", fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return fig


GROUPING_SUMMARY_ROWS = ("prototypes", "people (hidden truth)", "prototypes with 2 IDs of 1 camera",
                         "largest prototype (IDs)", "pairwise F", "purity", "noise share")


def grouping_summary(groupings: dict, cameras, true_identity_per_id) -> "pd.DataFrame":
    """Groupings of one bank side by side (``groupings`` maps a name to its
    :class:`pirid_lite.method.prototypes.Prototypes` or S'): one column per grouping, the truth-free signals
    first (number of prototypes, those holding two IDs of one camera, the largest), then the hidden-truth
    quality of :func:`pirid_lite.method.prototypes.prototype_quality` (pairwise F, purity, noise share)."""
    import pandas as pd

    from ..method.association import largest_prototype, same_camera_prototypes
    from ..method.prototypes import prototype_quality

    columns = {}
    for name, grouping in groupings.items():
        assignment = np.asarray(getattr(grouping, "assignment", grouping))
        quality = prototype_quality(assignment, true_identity_per_id)
        values = (quality[logkeys.NUM_PROTOTYPES], quality[logkeys.NUM_TRUE_IDENTITIES],
                  same_camera_prototypes(assignment, cameras), largest_prototype(assignment),
                  quality[logkeys.PAIRWISE_F], quality[logkeys.PURITY], quality[logkeys.NOISE_SHARE])
        columns[name] = [v if isinstance(v, (int, np.integer)) else f"{v:.3f}" for v in values]
    return pd.DataFrame(columns, index=list(GROUPING_SUMMARY_ROWS))


def linkage_scale_sweep(bank, cameras, true_identity_per_id, cfg, scales) -> "pd.DataFrame":
    """The camera-constrained association (``association="camera-linkage"``) of ``bank`` at each
    ``linkage_scale`` in ``scales``, every other setting read from ``cfg`` (through
    :func:`pirid_lite.method.groupings.associate`): one row per scale with the threshold it gave, the
    truth-free signals and :func:`pirid_lite.method.prototypes.prototype_quality`."""
    import pandas as pd

    from ..method.association import largest_prototype, same_camera_prototypes
    from ..method.groupings import associate
    from ..method.prototypes import prototype_quality

    rows = []
    for scale in scales:
        protos = associate(bank, cameras, cfg.replace(association="camera-linkage", linkage_scale=float(scale)))
        rows.append({"scale": float(scale), "threshold": protos.threshold,
                     logkeys.SAME_CAMERA_PROTOTYPES: same_camera_prototypes(protos.assignment, cameras),
                     logkeys.LARGEST_PROTOTYPE: largest_prototype(protos.assignment),
                     **prototype_quality(protos.assignment, true_identity_per_id)})
    return pd.DataFrame(rows)


def plot_linkage_scale(sweep: "pd.DataFrame", scale: float, reference: tuple[str, dict] | None = None, path=None):
    """A :func:`linkage_scale_sweep` against the threshold scale, ``scale`` marked. Left: pairwise F, purity
    and noise share; right: the number of prototypes against the number of people. ``reference`` =
    ``(name, prototype_quality record)`` of another grouping of the same bank (e.g. DBSCAN's), drawn as
    dotted lines."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.3))
    for col, colour in ((logkeys.PAIRWISE_F, "tab:blue"), (logkeys.PURITY, "tab:green"),
                        (logkeys.NOISE_SHARE, "tab:gray")):
        axes[0].plot(sweep["scale"], sweep[col], marker="o", ms=3, color=colour, label=col)
    axes[0].set(title="camera-linkage (hidden truth, diagnostics only)", xlabel="linkage_scale", ylim=(0, 1.02))
    axes[1].plot(sweep["scale"], sweep[logkeys.NUM_PROTOTYPES], marker="o", ms=3, color="tab:purple",
                 label="prototypes")
    axes[1].axhline(sweep[logkeys.NUM_TRUE_IDENTITIES].iloc[0], color="k", ls=":", label="people")
    axes[1].set(title="number of prototypes", xlabel="linkage_scale")
    if reference is not None:
        name, quality = reference
        axes[0].axhline(quality[logkeys.PAIRWISE_F], color="tab:blue", ls="--", lw=1, label=f"{name}: F")
        axes[1].axhline(quality[logkeys.NUM_PROTOTYPES], color="tab:purple", ls="--", lw=1, label=name)
    for ax in axes:
        ax.axvline(scale, color="crimson", ls="--", lw=1)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_association_curves(readings: dict, num_people: int | None = None, path=None):
    """Per stage-2 epoch, one line per reading (``readings`` maps a name to the table of
    :func:`pirid_lite.experiments.results.prototype_quality_per_epoch`: means over seeds): pairwise F, purity,
    the number of prototypes (against ``num_people``) and the prototypes holding two IDs of one camera. A
    key the runs did not log (runs made before it existed) leaves its panel with a note instead of a line."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ASSOCIATION_CURVES), figsize=(4 * len(ASSOCIATION_CURVES), 3.3), squeeze=False)
    for ax, col in zip(axes[0], ASSOCIATION_CURVES):
        drawn = False
        for name, table in readings.items():
            if col in table and table[col].notna().any():
                rows = table[[logkeys.EPOCH, col]].dropna()
                ax.plot(rows[logkeys.EPOCH], rows[col], marker="o", ms=3, label=name)
                drawn = True
        missing = [name for name, table in readings.items() if col not in table or table[col].isna().all()]
        if missing:
            ax.text(0.5, 0.5 if not drawn else 0.08, "not logged by the runs of\n" + "\n".join(missing),
                    transform=ax.transAxes, ha="center", va="center", fontsize=8, color="0.4")
        if col == logkeys.NUM_PROTOTYPES and num_people:
            ax.axhline(num_people, color="k", ls=":", label="people")
        if col in (logkeys.PAIRWISE_F, logkeys.PURITY):
            ax.set_ylim(0, 1.02)
        ax.set(title=col, xlabel="epoch")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle("stage-2 prototypes per epoch, mean over seeds (F and purity: hidden truth, log only)")
    fig.tight_layout()
    _save(fig, path)
    return fig


def _save(fig, path) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
