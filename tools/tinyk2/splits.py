"""Write the corpus's held-out splits where the suites read them.

    PYTHONPATH=tools python -m tinyk2.splits [--out suites/data/tinyk2]

They never enter training (tests/test_splits.py checks the committed files against a fresh
build and against every training document).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tinyk2.corpus import Corpus, build_corpus

SPLIT_FILES = {
    "heldout_text.jsonl": lambda c: [{"id": f"text-{i:03d}", "text": t} for i, t in enumerate(c.heldout_text)],
    "mcq.jsonl": lambda c: c.heldout_mcq,
    "arithmetic.jsonl": lambda c: c.heldout_arith,
    "toolcall_scenarios.jsonl": lambda c: c.heldout_scenarios,
}


def split_lines(corpus: Corpus) -> dict[str, str]:
    """File name -> exact file text (one sorted-key JSON object per line)."""
    return {
        name: "".join(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n" for row in rows(corpus))
        for name, rows in SPLIT_FILES.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyk2.splits", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("suites/data/tinyk2"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in split_lines(build_corpus(args.seed, scale=0.05)).items():
        (args.out / name).write_text(text)
        print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
