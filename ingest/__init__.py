"""Ingestion: knowledge files become a searchable index (load → clean → split → embed → store)."""
