"""Throwaway local services (PostgreSQL) for tests, benchmarks and the local demo."""
