"""User-facing knobs, validated once with one-line errors that say what to do."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SamplingParams:
    """How to sample one request. ``temperature=0`` is greedy.

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
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not (0.0 < self.top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}; use 1.0 to disable it")
        if self.top_k < -1:
            raise ValueError(f"top_k must be >= 0 (0 or -1 disables it), got {self.top_k}")
        if not (0.0 <= self.min_p < 1.0):
            raise ValueError(f"min_p must be in [0, 1), got {self.min_p}; use 0 to disable it")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.repeat_check and (self.repeat_block_size < 1 or self.repeat_check_window < self.repeat_block_size):
            raise ValueError("repeat_check_window must be >= repeat_block_size >= 1 "
                             f"(got {self.repeat_check_window}, {self.repeat_block_size}); or set repeat_check=False")

    @property
    def repeat_threshold(self) -> int:
        return max(self.repeat_check_window // self.repeat_block_size - 1, 2)


@dataclass
class CompletionOutput:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" | "length" | "repetition"


@dataclass
class RequestOutput:
    """Output ``i`` of ``generate`` belongs to prompt ``i``; the top-level fields are sample 0's."""

    prompt_token_ids: list[int]
    samples: list[CompletionOutput]

    @property
    def token_ids(self) -> list[int]:
        return self.samples[0].token_ids

    @property
    def text(self) -> str:
        return self.samples[0].text

    @property
    def finish_reason(self) -> str:
        return self.samples[0].finish_reason
