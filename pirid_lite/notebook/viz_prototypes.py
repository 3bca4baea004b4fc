"""Figures and tables of §2.3's prototypes for the notebooks (DBSCAN's eps, the association's threshold, a
prototype's members, the per-epoch quality of a run). Imported into :mod:`pirid_lite.notebook.viz`, so
``viz.plot_eps_sweep`` and the rest keep working; every figure function returns a matplotlib Figure and,
given ``path``, also saves it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import logkeys
from ..method.reliability import group_count

PROTOTYPE_STATS = (logkeys.NUM_PROTOTYPES, logkeys.NOISE_SHARE, logkeys.PURITY, logkeys.PAIRWISE_F)
PROTOTYPE_QUALITY_SHOWN = (logkeys.PURITY, logkeys.PAIRWISE_F, logkeys.NOISE_SHARE, logkeys.MEMORY_NN_ACCURACY)
# the per-epoch curves of notebook 03's association section (columns of results.prototype_quality_per_epoch)
ASSOCIATION_CURVES = (logkeys.PAIRWISE_F, logkeys.PURITY, logkeys.NUM_PROTOTYPES, logkeys.SAME_CAMERA_PROTOTYPES)

# Figures are drawn for a JupyterLab output area about 1,100 pixels wide (the inline backend draws 100 dpi):
# at most FIGURE_WIDTH inches, so that they show near full size and their text stays readable; panels of
# the same lines share one legend, below the figure, where it never covers data.
FIGURE_WIDTH = 10.5


def panel_grid(n: int, height: float = 2.9, max_columns: int = 2):
    """``(fig, axes)``: ``n`` panels on a grid of at most ``max_columns`` columns, FIGURE_WIDTH inches wide,
    ``height`` inches per row, constrained layout (room for a legend outside the axes); unused axes removed.
    ``axes`` is the flat list of the ``n`` panels."""
    import matplotlib.pyplot as plt

    columns = max(1, min(n, max_columns))
    rows = -(-n // columns)
    fig, grid = plt.subplots(rows, columns, figsize=(FIGURE_WIDTH, height * rows + 0.6), squeeze=False,
                             layout="constrained")
    axes = list(grid.flat)
    for ax in axes[n:]:
        ax.remove()
    return fig, axes[:n]


def figure_legend(fig, axes, columns: int | None = None, fontsize: float = 9) -> None:
    """One legend for the whole figure, under the panels (``loc="outside lower center"``: it never covers
    data and stays put when the data change): every label of ``axes`` once, in order of appearance."""
    seen = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    if seen:
        fig.legend(list(seen.values()), list(seen), loc="outside lower center", fontsize=fontsize, frameon=False,
                   ncol=columns or min(len(seen), 7))


def integer_epochs(ax) -> None:
    """Whole-number ticks on an epoch axis (no 2.5, 7.5)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_eps_sweep(sweep: "pd.DataFrame", paper_eps: float = 0.6, path=None):
    """Prototype statistics against DBSCAN's eps, one line per distance (``sweep`` from
    :func:`pirid_lite.method.prototypes.eps_sweep`); the paper's 0.6 marked."""
    import matplotlib.pyplot as plt

    cols = [c for c in PROTOTYPE_STATS if c in sweep]
    fig, axes = panel_grid(len(cols))
    for ax, col in zip(axes, cols):
        for metric, rows in sweep.groupby("metric"):
            ax.plot(rows["eps"], rows[col], marker="o", ms=3, label=metric)
        if col == logkeys.NUM_PROTOTYPES and logkeys.NUM_TRUE_IDENTITIES in sweep:
            ax.axhline(sweep[logkeys.NUM_TRUE_IDENTITIES].iloc[0], color="k", ls=":", label="true identities")
        ax.axvline(paper_eps, color="crimson", ls="--", lw=1, label=f"paper eps = {paper_eps:g}")
        ax.set_xlabel("eps")
        ax.set_title(col)
    figure_legend(fig, axes)
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
    num_prototypes = group_count(assignment)
    sizes = np.bincount(assignment[assignment >= 0], minlength=num_prototypes)
    pure = np.array([len(np.unique(truth[assignment == y])) == 1 for y in range(num_prototypes)], dtype=bool)
    order = np.argsort(-sizes, kind="stable")
    fig, axes = plt.subplots(1, 2, figsize=(FIGURE_WIDTH, 3.5), layout="constrained")
    axes[0].bar(np.arange(len(order)), sizes[order], color=np.where(pure[order], "tab:green", "tab:red"), width=1.0)
    axes[0].set(title=f"{num_prototypes} prototypes by size (green: one hidden person)",
                xlabel="prototype (largest first)", ylabel="IDs")
    curve = sweep[sweep["metric"] == distance]
    axes[1].plot(curve["eps"], curve[logkeys.PAIRWISE_F], marker="o", label="pairwise F (eps sweep)")
    axes[1].plot(curve["eps"], curve[logkeys.NOISE_SHARE], marker=".", label="noise share")
    axes[1].axvline(eps, color="k", ls="--", lw=1, label=f"eps = {eps:.2f}")
    axes[1].set(title=f"{distance} distance" + (" (sweep without cannot-link)" if cannot_link else ""),
                xlabel="eps", ylim=(0, 1))
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)   # beside the data
    _save(fig, path)
    return fig


def plot_prototype_quality_by_setting(logs: "pd.DataFrame", path=None):
    """Stage-2 prototype statistics per epoch, mean over seeds with a ±1 std band, one line per setting
    (``logs`` from :func:`pirid_lite.experiments.results.epoch_logs`; the setting is the run's tag, '' = default)."""
    import matplotlib.pyplot as plt

    cols = [c for c in PROTOTYPE_STATS if c in logs]
    stage2 = logs[logs[logkeys.STAGE] == 2].assign(setting=lambda d: d["tag"].replace("", "default"))
    stats = stage2.groupby(["setting", logkeys.EPOCH])[cols].agg(["mean", "std"])
    fig, axes = panel_grid(len(cols))
    for ax, col in zip(axes, cols):
        for setting, rows in stats.groupby(level="setting"):
            epochs = rows.index.get_level_values(logkeys.EPOCH)
            mean, std = rows[(col, "mean")], rows[(col, "std")].fillna(0.0)
            ax.plot(epochs, mean, marker="o", ms=3, label=setting)
            ax.fill_between(epochs, mean - std, mean + std, alpha=0.15)
        if col == logkeys.NUM_PROTOTYPES and logkeys.NUM_TRUE_IDENTITIES in stage2:
            ax.axhline(stage2[logkeys.NUM_TRUE_IDENTITIES].iloc[0], color="k", ls=":", label="true identities")
        ax.set(xlabel="epoch", title=col)
        integer_epochs(ax)
    figure_legend(fig, axes)
    fig.suptitle("prototypes against the hidden ground truth, per stage-2 epoch (mean ± std over seeds)")
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
    fig, axes = plt.subplots(1, 2, figsize=(FIGURE_WIDTH, 3.6), layout="constrained")
    colours = dict(zip(PROTOTYPE_QUALITY_SHOWN, ("tab:blue", "tab:orange", "tab:gray", "tab:green")))
    for col in PROTOTYPE_QUALITY_SHOWN:
        if col in stage2 and stage2[col].notna().any():
            axes[0].plot(stage2[logkeys.EPOCH], stage2[col], marker="o", ms=3, color=colours[col], label=col)
            at = stage2.loc[stage2[logkeys.EPOCH] == epoch, col]
            if len(at):
                axes[0].plot([epoch], at, marker="o", ms=9, mfc="none", mec="k", ls="")
    axes[0].set(title="prototype quality (hidden truth, log only)", xlabel="epoch", ylim=(0, 1.02))
    if len(stage2):
        axes[1].plot(stage2[logkeys.EPOCH], stage2[logkeys.NUM_PROTOTYPES], marker="o", ms=3, color="tab:purple",
                     label="prototypes")
    if logkeys.NUM_TRUE_IDENTITIES in stage2 and stage2[logkeys.NUM_TRUE_IDENTITIES].notna().any():
        axes[1].axhline(stage2[logkeys.NUM_TRUE_IDENTITIES].dropna().iloc[0], color="k", ls=":", label="true people")
    axes[1].set(title="number of prototypes", xlabel="epoch")
    for ax in axes:
        ax.axvline(epoch, color="crimson", ls="--", lw=1, label=f"epoch {epoch}")
        integer_epochs(ax)
    figure_legend(fig, axes)          # under the panels: it never covers a curve, whatever the epoch
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
    fig, axes = plt.subplots(len(chosen), max_members, figsize=(min(FIGURE_WIDTH, 1.3 * max_members), 2.4 * len(chosen)), squeeze=False)
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
    fig, axes = plt.subplots(len(rows), columns, figsize=(min(FIGURE_WIDTH, 0.9 * columns + 1.5), 2.3 * len(rows)), squeeze=False)
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


def three_groupings(features, ids, cameras, true_identity_per_id, cfg) -> "pd.DataFrame":
    """The paper's reading of §2.3 (DBSCAN as Table 2 trains it), the peers' association (image-level
    min-Jaccard, camera-disjoint merges) and ours (camera-linkage) on the same training-image ``features``
    (``ids``: the memory row of each image), every other setting from ``cfg``: :func:`grouping_summary`'s rows,
    plus how many prototypes the reliable-prototype sampling would trust (mutual cross-camera nearest
    neighbours, truth-free) and their pairwise precision (hidden truth)."""
    import pandas as pd
    import torch

    from ..experiments.reproduce import TAGGED_RUNS
    from ..method.groupings import GROUPINGS, ImageFeatures, associate, reliability
    from ..method.memory import id_centroids
    from ..method.prototypes import prototype_quality
    from ..method.reliability import trusted_assignment

    features, ids = torch.as_tensor(features).float(), torch.as_tensor(ids).long()
    cameras = torch.as_tensor(cameras)
    bank = id_centroids(features, ids, len(cameras))
    readings = {"DBSCAN (paper's reading)": cfg.replace(**TAGGED_RUNS["paper-reading"][1]),
                "peers' min-Jaccard": cfg.replace(association="min-jaccard"),
                "ours (camera-linkage)": cfg.replace(association="camera-linkage")}
    images = ImageFeatures(features, ids)
    formed = {name: associate(bank, cameras, reading, images) for name, reading in readings.items()}
    table = grouping_summary(formed, cameras.numpy(), true_identity_per_id)
    trusted, precision = [], []
    for name, protos in formed.items():
        reading = readings[name].replace(reliability="mutual-nn")
        mask = reliability(GROUPINGS[reading.association], protos, bank, cameras, reading, None, images)
        used = trusted_assignment(protos.assignment, mask)
        trusted.append(int(mask.sum()))
        precision.append(f"{prototype_quality(used, true_identity_per_id)[logkeys.PAIRWISE_PRECISION]:.3f}")
    extra = pd.DataFrame([trusted, precision], columns=table.columns,
                         index=["trusted (mutual cross-camera NN)", "their pairwise precision"])
    return pd.concat([table, extra])


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

    fig, axes = plt.subplots(1, 2, figsize=(FIGURE_WIDTH, 3.7), layout="constrained")
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
        ax.axvline(scale, color="crimson", ls="--", lw=1, label=f"scale {scale:g}")
    figure_legend(fig, axes, columns=4)   # under the panels: it stays put when the slider moves
    _save(fig, path)
    return fig


def plot_association_curves(readings: dict, num_people: int | None = None, path=None):
    """Per stage-2 epoch, one line per reading (``readings`` maps a name to the table of
    :func:`pirid_lite.experiments.results.prototype_quality_per_epoch`: means over seeds): pairwise F, purity,
    the number of prototypes (against ``num_people``) and the prototypes holding two IDs of one camera. A
    key a reading's runs did not log (runs made before it existed) is named under its panel instead."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = panel_grid(len(ASSOCIATION_CURVES), height=3.1)
    for ax, col in zip(axes, ASSOCIATION_CURVES):
        drawn = False
        for name, table in readings.items():
            if col in table and table[col].notna().any():
                rows = table[[logkeys.EPOCH, col]].dropna()
                ax.plot(rows[logkeys.EPOCH], rows[col], marker="o", ms=3, label=name)
                drawn = True
        missing = [name for name, table in readings.items() if col not in table or table[col].isna().all()]
        if missing and not drawn:
            ax.text(0.5, 0.5, "not logged by these runs", transform=ax.transAxes, ha="center", va="center",
                    fontsize=9, color="0.4")
        if col == logkeys.NUM_PROTOTYPES and num_people:
            ax.axhline(num_people, color="k", ls=":", label="people")
        if col in (logkeys.PAIRWISE_F, logkeys.PURITY):
            ax.set_ylim(0, 1.02)
        if col == logkeys.SAME_CAMERA_PROTOTYPES:   # a count: from 0, whole numbers
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylim(-0.05 * max(1.0, ax.get_ylim()[1]), max(1.0, ax.get_ylim()[1]))
        ax.set(title=col, xlabel="epoch" + ("".join(f"\n{name}: not logged" for name in missing) if missing else ""))
        integer_epochs(ax)
    figure_legend(fig, axes)
    fig.suptitle("stage-2 prototypes per epoch, mean over seeds (F and purity: hidden truth, log only)")
    _save(fig, path)
    return fig


def _save(fig, path) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
