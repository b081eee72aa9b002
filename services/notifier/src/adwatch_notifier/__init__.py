"""adwatch notifier service."""
