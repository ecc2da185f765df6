"""Enrollio Outlook 2-way sync: the functional core and its thin adapters.

Nothing in this package imports ``azure.functions``; ``function_app.py`` is the only shell.
"""
