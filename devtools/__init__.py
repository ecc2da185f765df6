"""Offline development tooling: Azurite lifecycle, the Graph + identity emulator, the local Functions host."""
