"""At least 80 bad inputs (checkpoint_cases.py, config_cases.py), each through the `quantgate` command
in-process: exit status 2, exactly one line on stderr naming the file, field or tensor, nothing written."""

from __future__ import annotations

import pytest

from tests.adversarial import checkpoint_cases, config_cases

ALL = checkpoint_cases.CASES + config_cases.CASES


def test_there_are_at_least_80_cases():
    assert len(ALL) >= 80
    assert len({c.id for c in ALL}) == len(ALL)


@pytest.mark.parametrize("case", ALL, ids=[c.id for c in ALL])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, refused, source, tmp_path):
    argv, names = case.make(tmp_path, source)
    argv = [str(a).format(src=source, tmp=tmp_path) if isinstance(a, str) else a for a in argv]
    refused(argv, *names)
