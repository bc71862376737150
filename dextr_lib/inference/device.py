"""Choosing a torch device from a user's string, and the precision its hardware runs natively."""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import warnings
from typing import Dict, FrozenSet, Iterator, Optional, Union

import torch

from ..errors import DeviceError, PrecisionWarning, UnknownNameError
from ..utils.cpuload import auto_thread_count

#: ``precision`` choices of predict/eval: ``auto`` resolves to one of the others per device.
PRECISIONS = ("fp32", "bf16", "fp16", "auto")

#: What ``--precision bf16`` costs on a CPU that has to emulate it (benchmarks/README.md:
#: AVX-512 EPYC with oneDNN limited to AVX2, resunet101 at 512; the issue's AMD Zen 3 laptop
#: measured about 3x).
BF16_EMULATED_SLOWDOWN = "about 3x slower than fp32"


def resolve_device(spec: Optional[Union[str, torch.device]] = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA if available, else MPS, else CPU; otherwise check ``spec``.

    Raises:
        DeviceError: unparseable spec, or CUDA/MPS requested where it is not available.
    """
    if spec is None or spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise DeviceError(
            f"unknown device {spec!r}; use cpu, cuda, cuda:N, mps or auto"
        ) from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} requested but CUDA is not available here; use the 'cpu' device")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {spec!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif dev.type == "mps":
        if not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
            raise DeviceError(f"device {spec!r} requested but MPS is not available here; use the 'cpu' device")
    elif dev.type != "cpu":
        raise DeviceError(f"unsupported device {spec!r}; use cpu, cuda, cuda:N, mps or auto")
    return dev


def module_device(net: torch.nn.Module) -> torch.device:
    """The device of a network's parameters (the CPU for a network without any)."""
    p = next(net.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _proc_cpuinfo_flags() -> Optional[FrozenSet[str]]:
    """The ``flags`` of the first processor in /proc/cpuinfo (Linux), else ``None``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def cpu_flags() -> str:
    """The CPU's feature flags as /proc/cpuinfo lists them (sorted, space-separated; "" elsewhere),
    recorded with every benchmark."""
    return " ".join(sorted(_proc_cpuinfo_flags() or ()))


@functools.lru_cache(maxsize=None)
def cpu_capabilities() -> Dict[str, bool]:
    """The CPU features that decide inference speed: ``avx2``, ``avx512`` (F), ``avx512_bf16``,
    ``amx_bf16``, ``vnni`` (AVX512-VNNI or AVX-VNNI: fast int8), and ``source`` of the answer.

    Read from /proc/cpuinfo on Linux; elsewhere from the checks PyTorch's own CPU dispatch uses.
    """
    flags = _proc_cpuinfo_flags()
    if flags is not None:
        return {
            "avx2": "avx2" in flags,
            "avx512": "avx512f" in flags,
            "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags,
            "vnni": "avx512_vnni" in flags or "avx_vnni" in flags,
            "source": "/proc/cpuinfo",
        }
    cpu = getattr(torch, "cpu", None)

    def ask(name: str) -> bool:
        fn = getattr(cpu, name, None)
        try:
            return bool(fn()) if fn is not None else False
        except RuntimeError:
            return False

    return {
        "avx2": ask("_is_avx2_supported"),
        "avx512": ask("_is_avx512_supported"),
        "avx512_bf16": ask("_is_avx512_bf16_supported"),
        "amx_bf16": ask("_is_amx_tile_supported"),
        "vnni": ask("_is_vnni_supported"),
        "source": "torch.cpu",
    }


def cpu_name() -> str:
    """The CPU model name (for benchmark records and messages)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def default_batch_size(runtime: str, device: Union[str, torch.device]) -> int:
    """Objects per network forward when the caller does not say: 1 for the torch runtime on a
    CPU, 8 elsewhere.

    On a CPU each 512 px object already fills the caches, and PyTorch's convolutions get slower
    per object in bigger batches (resunet101 at 512, 2-core AVX-512 CPU: 0.86 s/object at batch 1,
    1.08-1.15 at batch 8; benchmarks/README.md), while ONNX Runtime and OpenVINO stay level or
    gain a little from batching, and GPUs a lot.
    """
    return 1 if runtime == "torch" and torch.device(device).type == "cpu" else 8


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bfloat16 convolutions in hardware (so bf16 is faster than fp32):
    CUDA GPUs of compute capability 8.0+ (Ampere on), CPUs with AVX512-BF16 or AMX."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 8
    if device.type == "cpu":
        caps = cpu_capabilities()
        return caps["avx512_bf16"] or caps["amx_bf16"]
    return False


def resolve_precision(precision: str, device: torch.device, runtime: str = "torch") -> str:
    """The precision to run with: ``auto`` becomes ``bf16`` where the hardware runs it natively
    (and the runtime can use it), else ``fp32``; explicit choices are checked.

    Warns (:class:`PrecisionWarning`) for ``bf16`` on a CPU that would emulate it.

    Raises:
        UnknownNameError: not one of :data:`PRECISIONS`.
        DeviceError: ``fp16`` on a CPU, or bf16/fp16 with a runtime that cannot run them.
    """
    if precision not in PRECISIONS:
        raise UnknownNameError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISIONS)}")
    bf16_runtimes = ("torch", "openvino")
    if precision == "auto":
        return "bf16" if runtime in bf16_runtimes and native_bf16(device) else "fp32"
    if precision == "fp16" and (device.type == "cpu" or runtime != "torch"):
        raise DeviceError("precision 'fp16' needs a GPU with the torch runtime; use 'bf16' or 'auto' on the CPU")
    if precision == "bf16" and runtime not in bf16_runtimes:
        raise DeviceError(f"runtime {runtime!r} runs fp32 only here; use the openvino or torch runtime for bf16")
    if precision == "bf16" and device.type == "cpu" and not native_bf16(device):
        warnings.warn(PrecisionWarning(
            "bf16 on this CPU (no AVX512-BF16 or AMX) is emulated: "
            f"{BF16_EMULATED_SLOWDOWN}; use precision fp32 or auto"), stacklevel=3)
    return precision


#: torch's own default number of CPU threads (the physical cores, or $OMP_NUM_THREADS), read
#: before anything changes it.
TORCH_DEFAULT_THREADS = torch.get_num_threads()


def auto_threads() -> int:
    """CPU threads for torch that suit this machine now: torch's default (every physical core)
    unless other processes more than fill the CPUs, then fewer
    (:func:`dextr_lib.utils.cpuload.auto_thread_count`). ``$OMP_NUM_THREADS``, when set, is taken as given.
    """
    if os.environ.get("OMP_NUM_THREADS"):
        return TORCH_DEFAULT_THREADS
    return auto_thread_count(TORCH_DEFAULT_THREADS)


def set_threads(threads: Optional[int] = None) -> int:
    """Set torch's CPU threads (intra-op): ``threads`` when positive, else :func:`auto_threads`.

    Returns:
        The number of threads set.

    Raises:
        DeviceError: a negative number.
    """
    if threads is not None and threads < 0:
        raise DeviceError(f"threads must be 0 (auto) or a positive number, got {threads}")
    n = threads if threads else auto_threads()
    torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads in this thread, then restore the count.

    torch's thread count is per calling thread, so concurrent callers (a server's workers) do
    not undo each other's setting.
    """
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
