"""Host-side bookkeeping for requests (prompts) and sequences (their samples)."""
from __future__ import annotations

from dataclasses import dataclass, field

from litesys.outputs import CompletionOutput
from litesys.sampling_params import SamplingParams


@dataclass
class Request:
    index: int
    prompt: list[int]
    params: SamplingParams
    seeds: list[int]  # one per sample
    outputs: list[CompletionOutput | None] = field(default_factory=list)
    pending: int = 0  # samples not finished yet

    def __post_init__(self) -> None:
        self.outputs = [None] * self.params.n
        self.pending = self.params.n


@dataclass
class Seq:
    """One sample in flight. ``tokens_before_preemption``: what a preempted sequence had generated (empty once it
    runs again)."""

    req: Request
    sample: int
    order: int  # admission order; the newest running sequence is preempted first
    tokens_before_preemption: list[int] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)

    @property
    def seed(self) -> int:
        return self.req.seeds[self.sample]
