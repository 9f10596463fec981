"""The seed's behavioural task analyses (reaching, ...), each a pure function plus file wrappers."""
