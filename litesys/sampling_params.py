"""``SamplingParams``: how to sample one request, validated with one-line errors that say what to do; and the
``check_*`` helpers the other settings (``EngineConfig``) use."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass


def check_int(name: str, value, lo: int | None = None, hint: str = "") -> None:
    """``value`` is an integer (not a bool, not a float like 2.0) and ``>= lo``; else a one-line ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer{hint}, got {value!r} ({type(value).__name__})")
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}{hint}, got {value}")


def check_real(name: str, value, hint: str = "") -> None:
    """``value`` is a finite real number (not a bool, a string, NaN or inf); else a one-line ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number{hint}, got {value!r} ({type(value).__name__})")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number{hint}, got {value}")


def check_bool(name: str, value) -> None:
    if not isinstance(value, bool):  # "false" or 0 would silently mean something else
        raise ValueError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, request index, sample index): stable across runs and machines.
    ``LLM.generate`` seeds sample ``j`` of request ``i`` with ``derive_seed(seed, i, j)`` (``derive_seed(p.seed, j)``
    when the request has its own ``seed``)."""
    h = 0x243F6A8885A308D3
    for p in parts:
        h ^= (p & 0xFFFFFFFFFFFFFFFF) + 0x9E3779B97F4A7C15 + ((h << 6) & 0xFFFFFFFFFFFFFFFF) + (h >> 2)
        h &= 0xFFFFFFFFFFFFFFFF
        h = (h * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one request (frozen: validated once, when made). ``temperature=0`` is greedy.

    The repetition stop (LiteSys semantics): every step, a sequence with at least ``repeat_check_window``
    generated tokens stops with finish reason ``"repetition"`` when its last ``repeat_check_window`` tokens
    contain its trailing ``repeat_block_size`` tokens at least ``max(window // block - 1, 2)`` times; the
    final repeated block is dropped from the output.
    """

    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20  # 0 or -1: no top-k
    min_p: float = 0.0
    max_new_tokens: int = 1024
    seed: int | None = None  # None: derived from the engine's run seed and the request index
    ignore_eos: bool = False
    n: int = 1
    repeat_check: bool = True
    repeat_check_window: int = 1024
    repeat_block_size: int = 64

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Types first (a str, NaN, 2.5 or True where a number or an integer belongs), then ranges."""
        check_real("temperature", self.temperature, " (0 = greedy)")
        for name in ("top_p", "min_p"):
            check_real(name, getattr(self, name))
        check_int("top_k", self.top_k, hint=" (0 or -1 disables it)")
        check_int("max_new_tokens", self.max_new_tokens, 1)
        check_int("n", self.n, 1)
        for name in ("repeat_check_window", "repeat_block_size"):
            check_int(name, getattr(self, name))
        if self.seed is not None:
            check_int("seed", self.seed, 0, hint=" or None")
        check_bool("ignore_eos", self.ignore_eos)
        check_bool("repeat_check", self.repeat_check)
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}; use 1.0 to disable it")
        if self.top_k < -1:
            raise ValueError(f"top_k must be >= 0 (0 or -1 disables it), got {self.top_k}")
        if not (0.0 <= self.min_p < 1.0):
            raise ValueError(f"min_p must be in [0, 1), got {self.min_p}; use 0 to disable it")
        if self.repeat_check and (self.repeat_block_size < 1 or self.repeat_check_window < self.repeat_block_size):
            raise ValueError("repeat_check_window must be >= repeat_block_size >= 1 "
                             f"(got {self.repeat_check_window}, {self.repeat_block_size}); or set repeat_check=False")

    @property
    def repeat_threshold(self) -> int:
        return max(self.repeat_check_window // self.repeat_block_size - 1, 2)
