"""Ingestion: knowledge files become a searchable index (load → clean → split → embed → store)."""

from ingest.threads import configure as _configure_threads

_configure_threads()  # before numpy or the model is imported anywhere
