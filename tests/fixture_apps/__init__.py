"""Tiny function apps used only by the local-host tests."""
