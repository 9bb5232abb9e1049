"""The round engine's imperative shell: the round loop, a round, the client-facing coordinator, sessions,
receiving updates and folding them into the running sums."""
