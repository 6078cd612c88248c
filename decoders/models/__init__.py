"""One file per decoder family."""
