"""quantgate evaluation harness."""
