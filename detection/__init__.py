"""DeepBehavior."""
