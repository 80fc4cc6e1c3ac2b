"""dagforge's Airflow operators: thin wrappers that resolve connections and call dagforge code."""
