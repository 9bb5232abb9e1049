"""The round engine's imperative shell: sessions, the round driver, receiving and folding in updates."""
