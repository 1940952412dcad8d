"""Nightly reports: Markdown and a self-contained HTML page with plots, from results and gates."""
