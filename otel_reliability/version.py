"""The package version, in a module of its own so that instrumentors can name it as their scope version.

Reading ``otel_reliability.__version__`` from an instrumentor would import the package root, which imports the
configurator, which imports the instrumentors: an import cycle. This module imports nothing.
"""

__version__ = "0.1.0"
