"""The live display (a session node, or attached through the TCP bridge) and the review viewer."""
