"""LiteSys: a small, hackable LLM inference and evaluation engine."""
from litesys.config import CompletionOutput, RequestOutput, SamplingParams
from litesys.engine.llm import LLM

__all__ = ["LLM", "SamplingParams", "RequestOutput", "CompletionOutput"]
__version__ = "0.1.0"
