"""Workflows: what a command does around the library's computation, as plain Python calls.

- :mod:`lidmem.workflows.audit`: load a model reference for the audit (:func:`load_audit_model`)
  and write an audit's outputs (:func:`write_audit`: Parquet, ``.npy``, ``summary.json``,
  ``report.html``); the audit itself is :func:`lidmem.memorization.audit.audit_memorization`.
- :mod:`lidmem.workflows.train`: read a user's images and train lidmem's image UNet
  (the library side of ``lidmem train``).
"""
