"""Shared pytest configuration for mu's tests."""
