"""Executors: where shard tasks run (this machine, or a cluster).

See :mod:`imgtools.executors.base` for the interface and the registry.
"""
