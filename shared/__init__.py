"""Vocabulary shared by the API and the workers: settings, schemas, Redis keys, serialization."""
