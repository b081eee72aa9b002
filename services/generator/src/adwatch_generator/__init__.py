"""adwatch generator service."""
