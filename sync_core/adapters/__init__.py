"""Adapters: the only code in sync_core that performs I/O (Azure Storage, Microsoft Graph)."""
