"""Exceptions a user can act on: each message names what is wrong and says the fix."""

from __future__ import annotations


class SpartanError(Exception):
    """Base class for errors caused by inputs (parameters, data), not by bugs."""


class ConfigError(SpartanError):
    """A parameter file or override is invalid. The CLI exits with code 2."""


class DataValidationError(SpartanError):
    """Market data failed validation; nothing was written.

    Parameters
    ----------
    problems : list of str
        One sentence per problem, each naming the source, symbol, date and value.
    """

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        rest = self.problems[1:]
        tail = f" Also: {' '.join(rest)}" if rest else ""
        super().__init__(self.problems[0] + tail)
