"""Training the learned injection detector: corpus assembly (with provenance), templates, training, report.

Not imported by the gateway: ``opsgate.guard.injection_model`` reads only the shipped ``.npz``.
"""
