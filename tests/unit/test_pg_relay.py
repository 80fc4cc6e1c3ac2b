"""How the COPY relay reports its child's failure (dagforge.sources.pg_relay): as the server's error."""

from __future__ import annotations

import psycopg

from dagforge.sources.pg_relay import _failure

PSQL_VERBOSE = 'ERROR:  22P02: invalid input syntax for type integer: "x4001"\nLOCATION:  pg_strtoint32, numutils.c:232'


def test_a_server_error_keeps_its_class_and_its_message() -> None:
    error = _failure("psql", PSQL_VERBOSE)
    assert isinstance(error, psycopg.errors.InvalidTextRepresentation)
    assert str(error) == 'invalid input syntax for type integer: "x4001"'


def test_a_lost_connection_stays_an_operational_error() -> None:
    error = _failure("psql", "FATAL:  57P01: terminating connection due to administrator command")
    assert isinstance(error, psycopg.errors.AdminShutdown) and isinstance(error, psycopg.OperationalError)


def test_an_unknown_sqlstate_is_still_a_database_error() -> None:
    error = _failure("python", "ERROR:  ZZ999: something new")
    assert type(error) is psycopg.Error and str(error) == "something new"


def test_anything_else_is_an_operational_error_with_its_last_line() -> None:
    error = _failure("psql", 'psql: error: connection to server at "127.0.0.1", port 1 failed: refused\n')
    assert isinstance(error, psycopg.OperationalError)
    assert "the COPY relay (psql) failed: psql: error: connection to server" in str(error)
