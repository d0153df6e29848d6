"""Where secrets go: the sink protocol, the built-in sinks and the plugin registry."""
