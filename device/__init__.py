"""microprop device package: fixed-point inference and training for MicroPython boards.

Runs on: board and host (MicroPython >= 1.22; CPython for the portable paths).
"""
