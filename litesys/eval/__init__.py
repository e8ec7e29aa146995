"""Evaluation: task data, grading, metrics and the resumable generation runner shared by the eval scripts."""
from litesys.eval.math import grade
from litesys.eval.metrics import pass_at_k

__all__ = ["grade", "pass_at_k"]
