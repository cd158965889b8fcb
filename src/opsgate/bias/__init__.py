"""Bias audits: counterfactual prompt pairs compared between demographic groups."""
