"""§2.3 prototype formation at MSMT17 scale: ``form_prototypes`` (DBSCAN) with the cosine and Jaccard
distances, and the camera-constrained association (``linkage_prototypes``, complete linkage).

``python -m benchmarks.bench_prototypes [--small]`` — ≈5,300 intra-camera ID centroids (2,048-d) made from
1,500 identities, each seen in 2–5 of 15 cameras: centroid = identity centre + camera shift + noise,
L2-normalised. Prints seconds per grouping (goal: seconds, not minutes), the peak memory that Python and
NumPy allocate during it (``tracemalloc``: the distance matrices and scikit-learn's linkage), the number of
prototypes and their quality against the known identities.
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks._common import best_time, make_parser, report
from pirid_lite.method.association import same_camera_prototypes
from pirid_lite.method.prototypes import form_prototypes, linkage_prototypes, prototype_quality

FULL = dict(num_identities=1500, num_cameras=15, dim=2048)
SMALL = dict(num_identities=40, num_cameras=4, dim=256)


def clustered_memory(num_identities: int, num_cameras: int, dim: int, seed: int = 0,
                     camera_shift: float = 0.35, noise: float = 0.35):
    """``(features (N, d), label_camera (N,), identity (N,))`` with one row per (identity, camera)."""
    rng = np.random.default_rng(seed)
    cams_per_id = rng.integers(2, min(5, num_cameras) + 1, num_identities)
    identity = np.repeat(np.arange(num_identities), cams_per_id)
    camera = np.concatenate([rng.choice(num_cameras, k, replace=False) for k in cams_per_id])
    centres = rng.normal(size=(num_identities, dim)) / np.sqrt(dim)
    shifts = rng.normal(size=(num_cameras, dim)) / np.sqrt(dim)
    noise_rows = noise * rng.normal(size=(len(identity), dim)) / np.sqrt(dim)
    rows = centres[identity] + camera_shift * shifts[camera] + noise_rows
    order = np.lexsort((identity, camera))                   # memory rows grouped by camera, as in ICS
    features = F.normalize(torch.as_tensor(rows[order], dtype=torch.float32), dim=1)
    return features, torch.as_tensor(camera[order]), identity[order]


def main(small: bool = False, repeats: int = 1, threads: int | None = 1, eps: float = 0.6) -> dict:
    if threads:
        torch.set_num_threads(threads)
    features, label_camera, identity = clustered_memory(**(SMALL if small else FULL))
    result = {"ids_N": len(identity), "identities": int(identity.max()) + 1, "dim": features.shape[1],
              "torch_threads": torch.get_num_threads(), "eps": eps}
    groupings = {"cosine": lambda: form_prototypes(features, label_camera, eps=eps, metric="cosine"),
                 "jaccard": lambda: form_prototypes(features, label_camera, eps=eps, metric="jaccard"),
                 "linkage": lambda: linkage_prototypes(features, label_camera, scale=2.0)}
    for name, group in groupings.items():
        seconds, protos = best_time(group, repeats)
        tracemalloc.start()
        group()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        quality = prototype_quality(protos.assignment, identity)
        assert protos.assignment.shape == (len(identity),) and protos.centroids.shape[0] == protos.num_prototypes
        result.update({f"{name}_s": seconds, f"{name}_peak_mib": peak / 2**20,
                       f"{name}_prototypes": protos.num_prototypes,
                       f"{name}_same_camera_prototypes": same_camera_prototypes(protos.assignment, label_camera),
                       f"{name}_purity": float(quality["purity"]),
                       f"{name}_pairwise_f": float(quality["pairwise_f"]),
                       f"{name}_noise_share": float(quality["noise_share"])})
    return report("prototype formation (§2.3)", result)


if __name__ == "__main__":
    parser = make_parser(__doc__)
    args = parser.parse_args()
    main(small=args.small, threads=args.threads)
