-- Ticket revenue per booking day and departure airport (rebuilt from the loaded tables).
CREATE SCHEMA IF NOT EXISTS dwh;
CREATE TABLE IF NOT EXISTS dwh.fct_daily_revenue (
    booking_day       date NOT NULL,
    departure_airport char(3) NOT NULL,
    tickets           bigint NOT NULL,
    revenue           numeric(14, 2) NOT NULL,
    PRIMARY KEY (booking_day, departure_airport)
);
DELETE FROM dwh.fct_daily_revenue;
INSERT INTO dwh.fct_daily_revenue
SELECT (b.book_date AT TIME ZONE 'UTC')::date, f.departure_airport, count(*), sum(t.amount)
FROM {{ tables.tickets }} t
JOIN {{ tables.bookings }} b USING (book_ref)
JOIN {{ tables.flights }} f USING (flight_id)
GROUP BY 1, 2;
