"""The shared core: the vocabulary, settings, hand-off types and readers every zone uses.

It imports nothing else of the project (an import contract in pyproject.toml), so any zone
may import it and it can widen no zone.
"""
