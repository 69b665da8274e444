"""The gRPC contracts (``credit/v1/*.proto``) and their generated Python.

The generated modules are rewritten by :mod:`protos.generate`, never by hand.
"""
