"""BigQuery as a destination: the Postgres → BigQuery type map, SQL builders and the load steps."""
