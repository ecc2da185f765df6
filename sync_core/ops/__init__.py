"""The operator's CLI, ``python -m sync_core.ops`` (``make status`` locally): a thin shell over the use cases.

``context`` finds the settings, ``overview`` reads what operators look at, ``actions`` and ``replay`` act through
the same use cases the service runs, ``cli`` parses arguments and renders tables (rich) or JSON.
"""
