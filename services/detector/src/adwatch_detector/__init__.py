"""adwatch detector service."""
