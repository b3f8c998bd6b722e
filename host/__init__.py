"""microprop host side: data, features, float trainer, quantizer, integer reference.

Runs on: host (CPython >= 3.10 with NumPy).
"""
