"""The host's timing: one setting, ``PUBLISH_INTERVAL``; every other interval follows from it (the design note in
``otel_reliability.host``). ``tests/test_host.py`` checks the relations the code relies on."""

from __future__ import annotations

PUBLISH_INTERVAL = 0.5
"""How often a worker publishes its readings: how far behind another worker's part of a health answer may be."""

COMBINE_INTERVAL = PUBLISH_INTERVAL / 2
"""How often the master combines (and folds dead workers): a combination is at most this much older than a file."""

OTHERS_TTL = 0.8 * COMBINE_INTERVAL
"""A worker re-reads the master's combination once its copy is this old (in the background: the call serves the
copy it has). Just under the combination interval (0.2 s): a steady health poller sees every combination."""

OTHERS_MAX_AGE = PUBLISH_INTERVAL + OTHERS_TTL
"""Past this age the copy is re-read on the call itself. So an answer is never more than ``PUBLISH_INTERVAL +
COMBINE_INTERVAL + OTHERS_MAX_AGE`` (1.45 s) behind another worker."""

OWN_MAX_AGE = PUBLISH_INTERVAL + COMBINE_INTERVAL
"""A worker's own collection is refreshed by its publisher every ``PUBLISH_INTERVAL``: a health cache shorter
than this would make a call after a pause collect on the request path for nothing (a change still makes the next
call collect anew, whatever the age)."""

COUNT_REUSE = PUBLISH_INTERVAL
"""An answer's worker count may come from the snapshot its views just read, if that is younger than this."""

VERSIONS = 8
"""A worker's own publications kept (``VERSIONS * PUBLISH_INTERVAL``, 4 s): the one the master's combination holds
is among them unless the master stalled that long (then the worker keeps serving what it has)."""

WARM_FOR = 20 * PUBLISH_INTERVAL
"""For this long after a health call (10 s) the publisher re-combines after each publication, so the next call
finds the combination ready; an idle host does no work for health."""

FOLDED_MEMORY = 120 * PUBLISH_INTERVAL
"""A dead worker's file name stays listed as folded this long (60 s): far longer than a reader's race between
listing the directory and reading the file."""
