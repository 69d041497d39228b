"""pytest plugin: collects YAML suites (being written)."""
