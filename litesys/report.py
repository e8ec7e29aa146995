"""``python -m litesys.report RUN...``: the implementation is litesys/eval/report.py (docs/report.md)."""
from __future__ import annotations

import sys

from litesys.eval.report import format_table, main

__all__ = ["format_table", "main"]

if __name__ == "__main__":
    sys.exit(main())
