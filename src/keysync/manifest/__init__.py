"""The manifest: its model, the sink settings, the YAML loader, loading and the JSON Schema."""
