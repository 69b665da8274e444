"""Tests of gateway.stores."""
