"""``python -m litesys.report RUN...``: the implementation is litesys/eval/report.py (docs/report.md)."""
import sys

from litesys.eval.report import main

if __name__ == "__main__":
    sys.exit(main())
