"""Drift and quality monitoring: input/output drift per alias, the behaviour-change sentinel."""
