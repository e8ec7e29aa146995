"""Math tasks (AIME24/25, AMC23, MATH500, GSM8K, a local file): data, answer policy, grading, eval_math.py."""
