"""LiteSys: a small, hackable LLM inference and evaluation engine."""
from litesys.outputs import CompletionOutput, RequestOutput
from litesys.sampling_params import SamplingParams

__all__ = ["LLM", "SamplingParams", "RequestOutput", "CompletionOutput"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # the engine pulls in torch kernels; tools that only grade (grade_lcb.py) never pay for that import
    if name == "LLM":
        from litesys.engine.llm import LLM

        return LLM
    raise AttributeError(f"module 'litesys' has no attribute {name!r}")
