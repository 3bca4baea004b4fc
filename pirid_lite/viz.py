"""Figures for the notebooks and the README. Every function returns a matplotlib Figure and, given
``path``, also saves it (PNG at 150 dpi; any suffix matplotlib knows)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


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
# ---------------------------------------------------------------------------------------------------
# Training, prototype and Figure 3 plots (used by the notebooks; data comes from pirid_lite runs).

def plot_training_curves(log: "pd.DataFrame", title: str = "", path=None):
    """Per-epoch curves of a run's ``log.jsonl``: the three losses, prototypes/noise, purity, mAP."""
    import matplotlib.pyplot as plt

    panels = [("losses", ["loss_intra", "loss_inter_id", "loss_triplet"]),
              ("prototypes", ["num_prototypes"]), ("prototype quality", ["purity", "pairwise_f", "noise_share"]),
              ("retrieval (%)", ["mAP", "R1"])]
    panels = [(name, [c for c in cols if c in log]) for name, cols in panels]
    panels = [(name, cols) for name, cols in panels if cols and log[cols].notna().any().any()]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, (name, cols) in zip(axes[0], panels):
        for col in cols:
            rows = log[["epoch", col]].dropna()
            ax.plot(rows["epoch"], rows[col], marker="o", ms=3, label=col)
        stage2 = log.loc[log["stage"] == 2, "epoch"]
        if len(stage2):
            ax.axvspan(stage2.min() - 0.5, log["epoch"].max() + 0.5, color="0.92", zorder=0)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    fig.suptitle(title or "training (grey = stage 2: all three losses)")
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_tsne_panels(panels: dict, n_identities: int = 20, seed: int = 0, path=None, perplexity: float = 20.0,
                     title: str | None = None):
    """Figure 3: t-SNE of the same ``n_identities`` random test identities in several feature spaces.

    ``panels`` maps a title to ``(features, pids, camids)``; colour = identity, marker = camera. ``title``
    is added to the figure's suptitle (e.g. the start the networks were trained from).
    """
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    first_pids = next(iter(panels.values()))[1]
    candidates = np.unique(first_pids[first_pids > 0])
    chosen = np.random.default_rng(seed).choice(candidates, size=min(n_identities, len(candidates)), replace=False)
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, len(chosen)))
    markers = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "8", "d", "H"]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 5.0), squeeze=False)
    for ax, (panel_title, (features, pids, camids)) in zip(axes[0], panels.items()):
        keep = np.isin(pids, chosen)
        x = np.asarray(features, dtype=np.float32)[keep]
        embedded = TSNE(n_components=2, perplexity=min(perplexity, len(x) - 1), init="pca",
                        random_state=seed).fit_transform(x)
        for i, pid in enumerate(chosen):
            for cam in np.unique(camids[keep]):
                sel = (pids[keep] == pid) & (camids[keep] == cam)
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
    """Prototype statistics against DBSCAN's eps, one line per distance; the paper's 0.6 marked."""
    import matplotlib.pyplot as plt

    cols = [c for c in ("num_prototypes", "noise_share", "purity", "pairwise_f") if c in sweep]
    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.2), squeeze=False)
    for ax, col in zip(axes[0], cols):
        for metric, rows in sweep.groupby("metric"):
            ax.plot(rows["eps"], rows[col], marker="o", ms=3, label=metric)
        if col == "num_prototypes" and "num_true_identities" in sweep:
            ax.axhline(sweep["num_true_identities"].iloc[0], color="k", ls=":", label="true identities")
        ax.axvline(paper_eps, color="crimson", ls="--", lw=1, label="paper eps = 0.6")
        ax.set_xlabel("eps")
        ax.set_title(col)
        ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_prototype_quality_by_setting(logs: "pd.DataFrame", path=None):
    """Stage-2 prototype statistics per epoch, mean over seeds with a ±1 std band, one line per setting
    (``logs`` from :func:`pirid_lite.results.epoch_logs`; the setting is the run's tag, '' = default)."""
    import matplotlib.pyplot as plt

    cols = [c for c in ("num_prototypes", "noise_share", "purity", "pairwise_f") if c in logs]
    stage2 = logs[logs["stage"] == 2].assign(setting=lambda d: d["tag"].replace("", "default"))
    stats = stage2.groupby(["setting", "epoch"])[cols].agg(["mean", "std"])
    fig, axes = plt.subplots(1, len(cols), figsize=(4 * len(cols), 3.2), squeeze=False)
    for ax, col in zip(axes[0], cols):
        for setting, rows in stats.groupby(level="setting"):
            epochs = rows.index.get_level_values("epoch")
            mean, std = rows[(col, "mean")], rows[(col, "std")].fillna(0.0)
            ax.plot(epochs, mean, marker="o", ms=3, label=setting)
            ax.fill_between(epochs, mean - std, mean + std, alpha=0.15)
        if col == "num_prototypes" and "num_true_identities" in stage2:
            ax.axhline(stage2["num_true_identities"].iloc[0], color="k", ls=":", label="true identities")
        ax.set(xlabel="epoch", title=col)
        ax.legend(fontsize=8)
    fig.suptitle("prototypes against the hidden ground truth, per stage-2 epoch (mean ± std over seeds)")
    fig.tight_layout()
    _save(fig, path)
    return fig


def plot_prototype_epoch(log: "pd.DataFrame", epoch: int, path=None):
    """One run's stage-2 prototype diagnostics (``log.jsonl`` as a DataFrame) over the epochs, with ``epoch``
    marked: left, purity / pairwise F / noise share (and cross-camera NN accuracy when logged); right, the
    number of prototypes against the number of true people."""
    import matplotlib.pyplot as plt

    stage2 = log[log["num_prototypes"].notna()] if "num_prototypes" in log else log.iloc[:0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2))
    for col in ("purity", "pairwise_f", "noise_share", "nn_accuracy"):
        if col in stage2 and stage2[col].notna().any():
            axes[0].plot(stage2["epoch"], stage2[col], marker="o", ms=3, label=col)
            at = stage2.loc[stage2["epoch"] == epoch, col]
            if len(at):
                axes[0].plot([epoch], at, marker="o", ms=9, mfc="none", mec="k")
    axes[0].set(title="prototype quality (hidden truth, log only)", xlabel="epoch", ylim=(0, 1.02))
    axes[1].plot(stage2["epoch"], stage2["num_prototypes"], marker="o", ms=3, color="tab:purple", label="prototypes")
    if "num_true_identities" in stage2 and stage2["num_true_identities"].notna().any():
        axes[1].axhline(stage2["num_true_identities"].dropna().iloc[0], color="k", ls=":", label="true people")
    axes[1].set(title="number of prototypes", xlabel="epoch")
    for ax in axes:
        ax.axvline(epoch, color="crimson", ls="--", lw=1)
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


def _save(fig, path) -> None:
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
