"""The custom instrumentors, one module (or package) each, registered as ``reliability_*`` entry points."""
