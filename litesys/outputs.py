"""What ``LLM.generate`` returns: one ``RequestOutput`` per prompt, one ``CompletionOutput`` per sample."""
from __future__ import annotations

from dataclasses import dataclass


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
