"""Stateful tool environment for tool-use evaluation."""
