"""Errors a user can fix: one line naming the file, field or tensor; the CLI exits with status 2."""


class InputError(Exception):
    """Bad input (a file, a field, a tensor, an option). The message names it."""
