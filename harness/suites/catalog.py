"""The suite kinds this build knows: the single place they are registered.

Importing a kind's module registers it (`register_suite`). An import that fails fails the run;
nothing is discovered or skipped silently.
"""

import harness.suites.benchmark  # noqa: F401
import harness.suites.latency  # noqa: F401
import harness.suites.longhorizon  # noqa: F401
import harness.suites.perplexity  # noqa: F401
import harness.suites.serving_latency  # noqa: F401
import harness.suites.toolcall  # noqa: F401
