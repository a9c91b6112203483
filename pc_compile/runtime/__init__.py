"""Runtime: the state that lives across calls, the engine and its rules, and the executor of
pieces."""
