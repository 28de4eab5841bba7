"""``python -m otel_reliability.cli``: the same as the ``otel-reliability`` console script."""

import sys

from otel_reliability.cli import main

sys.exit(main())
