"""Section b, the device equals the CPU on fixed inputs, within stated tolerances, in fp32 and under AMP (bf16):
Eq. 1-5 and the memory updates, Eq. 7's gradient, the Jaccard distance, the prototype grouping (same
assignment), the evaluator (``evaluate_rank``, ``retrieval_metrics``) and the network's features."""
from __future__ import annotations

import contextlib
import copy
import math
import warnings
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from .pirid import (IntraCameraMemory, PrototypeMemory, batch_hard_triplet_loss, build_model, cosine_distmat,
                    evaluate_rank, form_prototypes, get_config, inter_id_loss, intra_camera_loss, jaccard_distance,
                    retrieval_metrics, total_loss)
from .shared import Check, Section

FP32 = dict(rtol=1e-4, atol=1e-5)   # tolerance = atol + rtol * max|reference|


def _to(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (list, tuple)):
        return type(value)(_to(v, device) for v in value)
    return value


@contextlib.contextmanager
def strict_fp32():
    """TF32 off for cuBLAS and cuDNN while comparing float32 results (restored afterwards)."""
    with warnings.catch_warnings():  # newer torch deprecates these flags in favour of fp32_precision
        warnings.simplefilter("ignore")
        saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _on(device: torch.device, fn: Callable, *args):
    """``fn(*args)`` in float32 (TF32 off) with the tensors on ``device``; outputs on the CPU."""
    with strict_fp32():
        out = fn(*_to(args, device))
    return _to(out, "cpu")


def _diff(name: str, mode: str, ref: torch.Tensor, out: torch.Tensor, rtol: float, atol: float,
          note: str = "") -> dict[str, Any]:
    ref, out = ref.detach().double(), out.detach().double()
    if ref.shape != out.shape:
        return {"name": name, "mode": mode, "pass": False, "error": f"shape {tuple(out.shape)} != {tuple(ref.shape)}"}
    finite_ref, finite_out = torch.isfinite(ref), torch.isfinite(out)
    same_pattern = bool(torch.equal(finite_ref, finite_out)) and bool(torch.equal(ref[~finite_ref], out[~finite_out]))
    diff = float((out - ref)[finite_ref & finite_out].abs().max()) if (finite_ref & finite_out).any() else 0.0
    scale = float(ref[finite_ref].abs().max()) if finite_ref.any() else 0.0
    tol = atol + rtol * scale
    entry = {"name": name, "mode": mode, "max_abs_diff": diff, "tolerance": tol, "rtol": rtol, "atol": atol,
             "pass": bool(same_pattern and diff <= tol)}
    if not same_pattern:
        entry["error"] = "non-finite entries (e.g. Eq. 2's masked -inf) differ"
    if note:
        entry["note"] = note
    return entry


def _canonical(assignment: torch.Tensor) -> np.ndarray:
    """Cluster labels renamed by first appearance (-1 kept): two equal partitions give equal arrays."""
    a = np.asarray(assignment.cpu(), dtype=np.int64)
    out, names = np.full_like(a, -1), {}
    for i, v in enumerate(a):
        if v >= 0:
            out[i] = names.setdefault(int(v), len(names))
    return out


def _fixed_inputs(smoke: bool) -> dict[str, Any]:
    """Seeded inputs shaped like one paper-profile step (N memory IDs, batch P x K, d features)."""
    gen = torch.Generator().manual_seed(0)
    n_ids, cams, d, p, k, y = (120, 4, 64, 4, 4, 30) if smoke else (600, 6, 2048, 8, 4, 150)
    label_camera = torch.arange(n_ids) * cams // n_ids                     # contiguous blocks A_c.. per camera
    bank = F.normalize(torch.randn(n_ids, d, generator=gen), dim=1)
    ids = torch.randperm(n_ids, generator=gen)[:p]
    labels = ids.repeat_interleave(k)
    camids = label_camera[labels]
    f = 3.0 * bank[labels] + torch.randn(p * k, d, generator=gen) / math.sqrt(d) * 2.0
    g = F.relu(torch.randn(p * k, d, generator=gen)) + 0.5 * bank[labels].abs() * math.sqrt(d) / 8
    assignment = torch.randint(0, y, (n_ids,), generator=gen)
    assignment[torch.rand(n_ids, generator=gen) < 0.15] = -1                # some noise IDs
    assignment[ids[0]] = assignment[ids[1]] = 0 if assignment[ids[0]] < 0 else assignment[ids[0]]  # a shared prototype
    centroids = F.normalize(torch.randn(y, d, generator=gen), dim=1)
    # clustered ID centroids for §2.3: groups of 8 rows (> k1 + 1 = 7), so that every top-k list and
    # reciprocal set of the Jaccard distance stays inside a well-separated group: no near-ties a device's
    # top-k could order otherwise than the CPU's (among the far rows, distances are equal to ~1e-7)
    people = 15 if smoke else 225
    centres = F.normalize(torch.randn(people, d, generator=gen), dim=1)
    owner = torch.arange(people).repeat_interleave(8)
    rows = F.normalize(centres[owner] + 0.35 * F.normalize(torch.randn(len(owner), d, generator=gen), dim=1), dim=1)
    row_camera = torch.randint(0, 6, (len(owner),), generator=gen)
    # retrieval: query/gallery features of test people, cameras, distractors
    q_people, per = (40, 4) if smoke else (750, 5)
    t_centres = F.normalize(torch.randn(q_people + 1, d, generator=gen), dim=1)
    g_pids = torch.cat([torch.arange(1, q_people + 1).repeat_interleave(per), torch.zeros(q_people, dtype=torch.long)])
    g_cams = torch.randint(0, 6, (len(g_pids),), generator=gen)
    q_pids = torch.arange(1, q_people + 1).repeat_interleave(2)
    q_cams = torch.randint(0, 6, (len(q_pids),), generator=gen)

    def feats(pids):
        base = torch.where((pids > 0)[:, None], t_centres[pids.clamp(min=0)], F.normalize(
            torch.randn(len(pids), d, generator=gen), dim=1))
        return base + 0.9 * F.normalize(torch.randn(len(pids), d, generator=gen), dim=1)

    qf, gf = feats(q_pids), feats(g_pids)
    return dict(label_camera=label_camera, bank=bank, labels=labels, camids=camids, f=f, g=g,
                proto_labels=assignment[labels], centroids=centroids, rows=rows, row_camera=row_camera,
                qf=qf, gf=gf, q_pids=q_pids.numpy(), g_pids=g_pids.numpy(), q_cams=q_cams.numpy(),
                g_cams=g_cams.numpy(), momentum=0.05, temperature=0.01)


def _eq_functions(x: dict[str, Any]) -> dict[str, tuple[Callable, tuple]]:
    """name -> (function of tensors, its tensor arguments); every function builds its own memories."""
    mu, tau, d = x["momentum"], x["temperature"], x["bank"].shape[1]

    def memory(label_camera, bank):
        mem = IntraCameraMemory(label_camera.cpu(), d, mu, tau).to(bank.device)
        mem.features.copy_(bank)
        return mem

    def eq1(label_camera, bank, f, labels):
        mem = memory(label_camera, bank)
        mem.update(f, labels)
        mem.update(f.flip(0) * 0.5, labels.flip(0))   # a second step: every row updated twice
        return mem.features

    def eq1_prototypes(centroids, f, proto_labels):
        pm = PrototypeMemory(centroids, mu, tau)
        pm.update(f, proto_labels)                     # -1 = an image of a noise ID: ignored
        return pm.features

    def eq2(label_camera, bank, f, camids):
        return memory(label_camera, bank).log_probs(f, camids)

    def eq3(label_camera, bank, f, labels, camids):
        return intra_camera_loss(memory(label_camera, bank).log_probs(f, camids), labels, camids)

    def eq4(centroids, f, proto_labels):
        return inter_id_loss(PrototypeMemory(centroids, mu, tau).logits(f), proto_labels)

    def eq5(g, proto_labels):
        return batch_hard_triplet_loss(g, proto_labels, 0.1)

    def eq7_grad(label_camera, bank, centroids, f, g, labels, camids, proto_labels):
        f, g = f.clone().requires_grad_(True), g.clone().requires_grad_(True)
        mem = memory(label_camera, bank)
        loss = total_loss(intra_camera_loss(mem.log_probs(f, camids), labels, camids),
                          inter_id_loss(PrototypeMemory(centroids, mu, tau).logits(f), proto_labels),
                          batch_hard_triplet_loss(g, proto_labels, 0.1))
        grad_f, grad_g = torch.autograd.grad(loss, (f, g))
        return torch.cat([grad_f.flatten(), grad_g.flatten()])

    X = x
    return {
        "Eq. 1 memory update K (IntraCameraMemory.update, 2 steps)": (eq1, (X["label_camera"], X["bank"], X["f"], X["labels"])),
        "Eq. 1 on K' with noise labels (PrototypeMemory.update)": (eq1_prototypes, (X["centroids"], X["f"], X["proto_labels"])),
        "Eq. 2 log p(j|x) (IntraCameraMemory.log_probs)": (eq2, (X["label_camera"], X["bank"], X["f"], X["camids"])),
        "Eq. 3 L_intra (intra_camera_loss)": (eq3, (X["label_camera"], X["bank"], X["f"], X["labels"], X["camids"])),
        "Eq. 4 L_inter_ID (inter_id_loss)": (eq4, (X["centroids"], X["f"], X["proto_labels"])),
        "Eq. 5 batch-hard triplet (batch_hard_triplet_loss)": (eq5, (X["g"], X["proto_labels"])),
        "Eq. 7 gradient of L w.r.t. f and g": (eq7_grad, (X["label_camera"], X["bank"], X["centroids"], X["f"], X["g"],
                                                          X["labels"], X["camids"], X["proto_labels"])),
    }


def _bf16_rounded(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.bfloat16).float()


def section_equivalence(run: Check, sec: Section) -> None:
    dev = run.device
    x = _fixed_inputs(run.smoke)
    comparisons: list[dict[str, Any]] = []
    sec.result["comparisons"] = comparisons
    sec.result["reference"] = "CPU, float32"
    sec.result["device"] = str(dev)
    sec.result["amp_meaning"] = (
        "amp_bf16 = what AMP changes in pirid_lite: the network runs under torch.autocast(bf16) (compared in "
        "eval mode, judged against the CPU's own bf16 error); everything after it (Eq. 1-5, Eq. 7's gradient, "
        "the Jaccard distance, the grouping, the evaluator) runs in float32 on its features rounded to bf16, "
        "as the trainer and the evaluator do, and is compared with the CPU on the same rounded inputs "
        "(bf16_rounding_effect: how much the rounding itself moves the CPU's result, for information).")

    def add(entry: dict[str, Any]) -> None:
        comparisons.append(entry)

    def guarded(name: str, mode: str, fn: Callable[[], dict[str, Any]]) -> None:
        def body():
            try:
                add(fn())
            except Exception as error:  # noqa: BLE001 - one comparison's failure is its own result
                add({"name": name, "mode": mode, "pass": False, "error": f"{type(error).__name__}: {error}"})
        sec.item(f"{name} [{mode}]", body)

    # Eq. 1-5 and Eq. 7's gradient; amp_bf16: on f(x) and g(x) rounded to bf16, as the trainer's step gets
    # them from the autocast network (it computes the losses and Eq. 1 after the autocast block, in float32)
    cpu = torch.device("cpu")
    rounded = {id(x["f"]): _bf16_rounded(x["f"]), id(x["g"]): _bf16_rounded(x["g"])}
    for name, (fn, args) in _eq_functions(x).items():
        ref = _on(cpu, fn, *args)
        amp_args = tuple(rounded.get(id(a), a) for a in args)
        amp_ref = _on(cpu, fn, *amp_args)
        effect = float((amp_ref.double() - ref.double())[torch.isfinite(ref)].abs().max())
        for mode, a, r in (("fp32", args, ref), ("amp_bf16", amp_args, amp_ref)):
            def compare(name=name, fn=fn, mode=mode, a=a, r=r):
                entry = _diff(name, mode, r, _on(dev, fn, *a), **FP32)
                if mode == "amp_bf16":
                    entry["bf16_rounding_effect"] = effect  # CPU: rounded vs float32 inputs (information)
                return entry
            guarded(name, mode, compare)

    # Jaccard distance, the prototype grouping (§2.3) and the evaluator: each against the CPU on the same
    # inputs (amp_bf16: the features rounded to bf16, as the autocast network hands them over; rounding
    # makes exact ties likelier, which is where a device's top-k or sort could part from the CPU's)
    rows, row_camera = x["rows"], x["row_camera"]
    grouping = dict(eps=0.6, min_samples=2, metric="jaccard", k1=6, k2=6)
    jac_name = "Jaccard distance (jaccard_distance, k1=6, k2=6)"
    group_name = "prototype grouping (form_prototypes, DBSCAN on Jaccard, eps 0.6)"
    metrics_name = "retrieval_metrics (R1/R5/R10/mAP in %, from features)"
    fp32_grouping = None
    for mode, prep in (("fp32", lambda t: t), ("amp_bf16", _bf16_rounded)):
        inputs = prep(rows)
        guarded(jac_name, mode, lambda mode=mode, inputs=inputs: _diff(
            jac_name, mode, jaccard_distance(inputs, k1=6, k2=6),
            jaccard_distance(inputs.to(dev), k1=6, k2=6).cpu(), rtol=0, atol=1e-4))
        ref = form_prototypes(inputs, row_camera, **grouping)
        if fp32_grouping is None:
            fp32_grouping = ref
            sec.result["grouping_reference"] = {"ids": int(len(rows)), "prototypes": ref.num_prototypes,
                                                "noise_share": round(ref.noise_share, 4)}

        def grouping_check(mode=mode, inputs=inputs, ref=ref):
            got = form_prototypes(inputs.to(dev), row_camera.to(dev), **grouping)
            differing = int((_canonical(got.assignment) != _canonical(ref.assignment)).sum())
            centroid_diff = (float((got.centroids.cpu().double() - ref.centroids.double()).abs().max())
                             if differing == 0 and got.num_prototypes else None)
            return {"name": group_name, "mode": mode, "max_abs_diff": differing, "tolerance": 0,
                    "unit": "IDs whose prototype differs (same partition = 0)", "prototypes": got.num_prototypes,
                    "centroids_max_abs_diff": centroid_diff,
                    "same_partition_as_fp32_inputs": bool((_canonical(ref.assignment) ==
                                                           _canonical(fp32_grouping.assignment)).all()),
                    "pass": differing == 0 and (centroid_diff is None or centroid_diff <= 1e-5)}
        guarded(group_name, mode, grouping_check)

        def metrics_check(mode=mode):
            qf, gf = prep(x["qf"]), prep(x["gf"])
            ref = retrieval_metrics(qf, x["q_pids"], x["q_cams"], gf, x["g_pids"], x["g_cams"], device="cpu")
            got = retrieval_metrics(qf, x["q_pids"], x["q_cams"], gf, x["g_pids"], x["g_cams"], device=dev)
            diff = max(abs(got[k] - ref[k]) for k in ref)
            return {"name": metrics_name, "mode": mode, "max_abs_diff": diff, "tolerance": 0.05,
                    "unit": "percentage points", "mAP_cpu": round(ref["mAP"], 3), "pass": diff <= 0.05}
        guarded(metrics_name, mode, metrics_check)

    distmat = cosine_distmat(x["qf"], x["gf"]).numpy()
    ids = (x["q_pids"], x["g_pids"], x["q_cams"], x["g_cams"])
    cmc_ref, map_ref = evaluate_rank(distmat, *ids, max_rank=50, device="cpu")
    sec.result["evaluator_reference"] = {"queries": len(x["q_pids"]), "gallery": len(x["g_pids"]),
                                         "mAP": round(100 * map_ref, 4), "R1": round(100 * float(cmc_ref[0]), 4)}

    def rank_check():
        cmc, mAP = evaluate_rank(distmat, *ids, max_rank=50, device=dev)
        diff = max(abs(mAP - map_ref), float(np.abs(cmc - cmc_ref).max()))
        return {"name": "evaluate_rank (CMC and mAP, same distance matrix)", "mode": "fp32", "max_abs_diff": diff,
                "tolerance": 1e-12, "pass": diff <= 1e-12}
    guarded("evaluate_rank (CMC and mAP, same distance matrix)", "fp32", rank_check)

    # the network's GAP features g(x) (paper profile: ResNet-50 at 256x128; smoke: the test profile), in train
    # mode (a training step: BatchNorm over the batch) and eval mode (extract_features: prototypes, evaluation).
    # Under AMP only eval mode is compared, and the device's bf16 error is judged against the CPU's own bf16
    # error: an untrained network is badly conditioned in train mode (BatchNorm over near-identical
    # activations amplifies rounding), and CPU autocast's bf16 BatchNorm in train mode is no reference (in
    # torch 2.11 and 2.13 it returned NaN on some calls and different values on others).
    def network_checks():
        cfg = get_config("test" if run.smoke else "paper", pretrained=None)
        torch.manual_seed(0)
        model = build_model(cfg)
        images = torch.randn(8, 3, cfg.height, cfg.width, generator=torch.Generator().manual_seed(1))

        def g_of(device, amp, train):
            net = copy.deepcopy(model).to(device).train(train)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                out = net(images.to(device))[0]
            return F.normalize(out.float(), dim=1).cpu().double()

        def gap(a, b):
            return float((1 - (a * b).sum(1)).max())

        for train in (True, False):
            name = (f"network GAP features g(x) ({cfg.arch} {cfg.height}x{cfg.width}, batch 8, "
                    f"{'train' if train else 'eval'} mode)")
            ref = g_of(torch.device("cpu"), False, train)
            cpu_bf16_gap = None if train else gap(g_of(torch.device("cpu"), True, train), ref)

            def one_fp32(name=name, ref=ref, train=train):
                with strict_fp32():
                    value = gap(g_of(dev, False, train), ref)
                return {"name": name, "mode": "fp32", "max_abs_diff": value, "tolerance": 1e-4,
                        "unit": "max over images of 1 - cos(g_device, g_cpu); TF32 off", "pass": value <= 1e-4}

            def one_amp(name=name, ref=ref, train=train, cpu_bf16_gap=cpu_bf16_gap):
                value = gap(g_of(dev, True, train), ref)
                tol = max(5e-3, 4 * cpu_bf16_gap) if math.isfinite(cpu_bf16_gap) else 2e-2  # NaN: see below
                return {"name": name, "mode": "amp_bf16", "max_abs_diff": value, "tolerance": tol,
                        "unit": "max over images of 1 - cos(g_device_bf16, g_cpu_fp32)",
                        "cpu_bf16_gap": cpu_bf16_gap,
                        "note": "tolerance = max(5e-3, 4 x the CPU's own bf16 gap), 2e-2 if that gap is NaN",
                        "pass": value <= tol}
            guarded(name, "fp32", one_fp32)
            if train:  # train mode under AMP: sections c-e train with it (finite losses checked there)
                continue
            if run.smoke:  # the "device" is the CPU, whose autocast is no pirid_lite path (AMP is CUDA only)
                sec.result["cpu_bf16_gap_eval_mode"] = cpu_bf16_gap
                sec.skipped.append(f"{name} [amp_bf16]: compared on CUDA only (CPU autocast's bf16 convolutions "
                                   "and BatchNorm returned NaN on some calls in torch 2.11 and 2.13)")
            else:
                guarded(name, "amp_bf16", one_amp)
    sec.item("network features", network_checks)

    failed = [f"{c['name']} [{c['mode']}]" for c in comparisons if not c["pass"]]
    sec.check("every comparison within tolerance", not failed, failed=failed, compared=len(comparisons))
