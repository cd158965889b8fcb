"""Prompt registry, releases per alias, experiments, statistics, automatic rollback and shadow traffic."""
