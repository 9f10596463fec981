"""The simulated rig: scene geometry, synthetic mouse, renderer."""
