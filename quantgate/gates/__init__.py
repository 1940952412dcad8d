"""Release gates: the plan (gates/plan.py), gate rows judged exactly (gates/evaluate.py), text,
Markdown and JUnit renderings, and the `quantgate gate` command."""
