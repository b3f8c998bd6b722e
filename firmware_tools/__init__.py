"""microprop host tools: the `microprop` command, virtual board, deploy, monitor, record.

Runs on: host (CPython).
"""
