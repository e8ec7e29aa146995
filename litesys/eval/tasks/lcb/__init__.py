"""LiveCodeBench: data and prompts, the sandboxed harness and judge, verdict files, eval_lcb.py and grade_lcb.py."""
