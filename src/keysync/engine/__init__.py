"""Side effects and threads: the applier, the session that composes manifest, client and sink,
the apply sequence, audit, metrics and the watch loop. No click, no terminal."""
