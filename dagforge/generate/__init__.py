"""Generated data: Faker-backed column generators, table ordering, and the Postgres writer."""
