"""Everything about model weights: the manifest of pinned sources, the build-time bake, the
run-time offline resolve, and the writer of tiny random-weight dev models in the same layout."""
