"""Test doubles shared by several test tiers and the reliability scripts (not shipped in the package)."""
