"""The precision of a probe's forward pass: the choices, the default and how ``auto`` resolves.

Only the forward pass changes: the hooked features are float32 (means of bf16 maps accumulated in float32) and
become float64 before they enter the statistics, whatever the precision. Kept free of a top-level torch import,
so the CLI can build its choices from :data:`PRECISIONS` cheaply.
"""

from __future__ import annotations

from nclab.utils.errors import NclabError

#: ``--precision`` choice -> what it does (the CLI's choices and help come from this table)
PRECISIONS: dict[str, str] = {
    "auto": "bf16 where the device computes bf16 natively (CUDA with bf16, a CPU with AVX-512 BF16 or AMX and "
            "oneDNN), else fp32",
    "fp32": "float32 forward pass in the model's own memory format (the results of nclab before --precision)",
    "bf16": "bfloat16 autocast forward pass, channels_last for 4-D inputs",
}
DEFAULT_PRECISION = "auto"


def native_bf16(device) -> bool:
    """True where ``device`` computes bfloat16 natively: a CUDA device with bf16 (Ampere or newer), or a CPU
    with oneDNN and AVX-512 BF16 or AMX tiles. False when unsure (another device, an older torch)."""
    import torch

    dev = torch.device(device)
    try:
        if dev.type == "cuda":
            return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
        if dev.type == "cpu":
            if not (torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
                return False
            # torch.ops.mkldnn._is_mkldnn_bf16_supported() is also true for plain AVX-512 (bf16 emulated, slower
            # than fp32), so ask for the instructions themselves
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError, TypeError):
        return False
    return False


def resolve_precision(precision: str, device) -> str:
    """``"fp32"`` or ``"bf16"`` for a ``precision`` of :data:`PRECISIONS` on ``device``."""
    if precision not in PRECISIONS:
        raise NclabError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


__all__ = ["PRECISIONS", "DEFAULT_PRECISION", "native_bf16", "resolve_precision"]
