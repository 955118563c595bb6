"""Interfaces: the command line, file loading, the demo, the pytest variant."""
