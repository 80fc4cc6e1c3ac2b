-- Between two runs: new bookings with their tickets, and flights whose status changes.
INSERT INTO bookings.bookings
SELECT upper(lpad(to_hex(g), 6, '0')), (SELECT max(book_date) FROM bookings.bookings) + make_interval(mins => g - 5000),
       99.00
FROM generate_series(5001, 5100) AS g;

INSERT INTO bookings.tickets
SELECT lpad(g::text, 13, '0'), upper(lpad(to_hex(5001 + g % 100), 6, '0')), 1 + g % 2000, 'NEW PASSENGER ' || g,
       'Economy', 99.00, (SELECT max(issued_at) FROM bookings.tickets) + make_interval(mins => g - 8000)
FROM generate_series(8001, 8150) AS g;

UPDATE bookings.flights
SET status = 'Cancelled', updated_at = (SELECT max(updated_at) FROM bookings.flights) + interval '1 hour'
WHERE flight_id IN (10, 20, 30);
