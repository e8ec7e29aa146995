"""Host-side bookkeeping for requests (prompts) and sequences (their samples)."""
from __future__ import annotations

from dataclasses import dataclass, field

from litesys.sampling_params import SamplingParams


@dataclass
class Request:
    index: int
    prompt: list[int]
    params: SamplingParams
    seeds: list[int]  # one per sample


@dataclass
class Seq:
    """One sample in flight (``tokens_before_preemption``: what it had generated when preempted, until it resumes)."""

    req: Request
    sample: int
    order: int  # admission order; the newest running sequence is preempted first
    tokens_before_preemption: list[int] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)

    @property
    def seed(self) -> int:
        return self.req.seeds[self.sample]
