"""adwatch: shared contracts and plumbing for the generator, detector and notifier."""

__version__ = "0.1.0"
