"""The keys of a run's per-epoch log (``log.jsonl``), defined once.

The trainer writes them, and plots and tables read them by these names only. ``tests/test_logkeys.py``
trains every variant and fails if a plot or table asks for a key that no run writes.
"""
from __future__ import annotations

# every epoch
EPOCH = "epoch"
STAGE = "stage"                      # 1 = L_intra only, 2 = all losses on prototypes (§2.4)
LR = "lr"
SAMPLED_BY = "sampled_by"            # what the P-K sampler grouped by: "intra-id", "prototype" or "reliable-prototype"
SECONDS = "seconds"                  # wall time since the run started
STEPS_SECONDS = "steps_seconds"      # this epoch's wall time in its training steps (forward, losses, backward)
LOSS_TOTAL = "loss_total"            # L of Eq. 7, mean over the epoch's steps
INTRA_ACCURACY = "intra_accuracy"    # share of images whose own-camera memory row scores highest (Eq. 2)
FALLBACK_INTRA_ONLY = "fallback_intra_only"  # a stage-2 epoch where DBSCAN found no prototype
RANK_DIGESTS = "rank_digests"        # several processes: each rank's hash of weights, K and S' (all equal)


def loss_key(term: str) -> str:
    """Log key of a loss term of the recipe (``pirid_lite.method.losses.LOSS_TERMS``), e.g. ``loss_intra``."""
    return f"loss_{term}"


# stage-2 epochs of ICS variants: what the prototypes show without the truth (a user with real data sees these)
SAME_CAMERA_PROTOTYPES = "same_camera_prototypes"  # prototypes holding two IDs of one camera (certainly wrong)
LARGEST_PROTOTYPE = "largest_prototype"            # IDs in the largest prototype (≤ the number of cameras if right)
ASSOCIATION_THRESHOLD = "association_threshold"    # camera-linkage: the epoch's adaptive threshold
TRUTH_FREE = (SAME_CAMERA_PROTOTYPES, LARGEST_PROTOTYPE)
# stage-2 epochs that sample by prototype (stage2_sampling "prototype" or "reliable-prototype")
PROTOTYPE_SAMPLED_SHARE = "prototype_sampled_share"  # share of training images the P-K sampler draws by prototype
RELIABLE_SHARE = "reliable_share"                    # share of prototypes trusted (truth-free; 1 under "prototype")
SAMPLING_PRECISION = "sampling_precision"            # hidden truth, logged only: pairwise precision of those prototypes
# stage-2 epochs: where §2.3's time goes (what grows with the number of IDs)
FEATURE_PASS_SECONDS = "feature_pass_seconds"  # the clustering input: K's rows, or a pass over every training image
GROUPING_SECONDS = "grouping_seconds"          # the grouping (DBSCAN or the association) on that input
# wall times differ between two runs that are otherwise bit-identical (compare logs without them)
WALL_TIMES = (SECONDS, STEPS_SECONDS, FEATURE_PASS_SECONDS, GROUPING_SECONDS)

# stage-2 epochs: the prototypes against the hidden truth (logged only, never trained on)
NUM_PROTOTYPES = "num_prototypes"
NOISE_SHARE = "noise_share"
PURITY = "purity"
PAIRWISE_PRECISION = "pairwise_precision"
PAIRWISE_RECALL = "pairwise_recall"
PAIRWISE_F = "pairwise_f"
NUM_TRUE_IDENTITIES = "num_true_identities"
MEMORY_NN_ACCURACY = "memory_nn_accuracy"  # cross-camera nearest-neighbour accuracy of K's rows

PROTOTYPE_QUALITY = (PURITY, PAIRWISE_PRECISION, PAIRWISE_RECALL, PAIRWISE_F, NUM_PROTOTYPES,
                     NUM_TRUE_IDENTITIES, NOISE_SHARE)

# retrieval, in the log when eval_every > 0 and in metrics.json
RETRIEVAL = ("R1", "R5", "R10", "mAP")
