"""The test suite (a package, so that ``tests.*`` always means these files, whatever site-packages holds)."""
