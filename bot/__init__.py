"""Styringsbot: cited answers about Oslo kommune's governance system, from its own documents."""

from ingest.threads import configure as _configure_threads

_configure_threads()  # before numpy or the model is imported anywhere
