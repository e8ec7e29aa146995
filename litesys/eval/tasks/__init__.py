"""One folder per eval task: its data, prompts, grading and summary; ``main.py`` is its entry."""
