"""Evaluation: the generic floor (runner, data-parallel runner, CLI, file I/O, process pool, sandbox, metrics,
cost model, report) and one folder per task under ``tasks/`` (math, LiveCodeBench)."""
