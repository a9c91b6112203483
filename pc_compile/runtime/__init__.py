"""Runtime: the state that lives across calls, the policies, and the executor of pieces."""
