"""Review aids for pull requests: the DAG as a graph, and what a change does to the plans."""
