"""Prefect flows: thin wrappers over tasks that add parameters, ordering, retries, artifacts."""
