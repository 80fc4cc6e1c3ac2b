"""Staging through object storage: file formats, manifests, extract and load."""
