"""Generated registry trees for tests, benchmarks and the demo (not used by the agent itself)."""

from .synthetic import TreeShape, TreeSummary, TreeWriter, write_tree

__all__ = ["TreeShape", "TreeSummary", "TreeWriter", "write_tree"]
