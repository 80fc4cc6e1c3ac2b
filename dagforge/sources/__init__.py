"""Sources: where rows come from. Each kind reads a window in one consistent snapshot and says what
it saw (:class:`dagforge.contracts.SourceSnapshot`)."""
