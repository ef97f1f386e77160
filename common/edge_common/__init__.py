"""Code shared by host and board: numpy only, never torch."""
