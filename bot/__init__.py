"""Styringsbot: cited answers about Oslo kommune's governance system, from its own documents."""
