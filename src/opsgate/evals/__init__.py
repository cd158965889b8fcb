"""Evaluation: datasets (files or the request log), scorers and judges, runs, comparison, gates,
reports, and continuous evaluation of live traffic. See docs/architecture.md, "Evaluation"."""
