"""Databricks-compatible serving endpoints: config model, persistence, traffic routing and the endpoint service.

The HTTP side lives in ``server/rest/databricks.py``; this package knows no transport.
"""
