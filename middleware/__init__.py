"""Middleware layers for openarmature-nodes (see the package README)."""
