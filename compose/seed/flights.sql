-- Source data for pipelines/flights_to_dwh.yml: a small flight-booking application schema.
CREATE SCHEMA IF NOT EXISTS bookings;

CREATE TABLE IF NOT EXISTS bookings.aircrafts (
    aircraft_code char(3) PRIMARY KEY,
    model         text NOT NULL,
    range_km      integer NOT NULL
);
INSERT INTO bookings.aircrafts VALUES
    ('319', 'Airbus A319-100', 6700), ('320', 'Airbus A320-200', 5700), ('321', 'Airbus A321-200', 5600),
    ('733', 'Boeing 737-300', 4200), ('763', 'Boeing 767-300', 7900), ('773', 'Boeing 777-300', 11100),
    ('CR2', 'Bombardier CRJ-200', 2700), ('CN1', 'Cessna 208 Caravan', 1200), ('SU9', 'Sukhoi Superjet-100', 3000)
ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS bookings.airports (
    airport_code char(3) PRIMARY KEY,
    airport_name text NOT NULL,
    city         text NOT NULL,
    timezone     text NOT NULL
);
INSERT INTO bookings.airports VALUES
    ('LIS', 'Humberto Delgado', 'Lisboa', 'Europe/Lisbon'), ('OPO', 'Francisco Sá Carneiro', 'Porto', 'Europe/Lisbon'),
    ('MAD', 'Barajas', 'Madrid', 'Europe/Madrid'), ('CDG', 'Charles de Gaulle', 'Paris', 'Europe/Paris'),
    ('FRA', 'Frankfurt am Main', 'Frankfurt', 'Europe/Berlin'), ('ZRH', 'Zürich', 'Zürich', 'Europe/Zurich'),
    ('WAW', 'Chopin', 'Warszawa', 'Europe/Warsaw'), ('KRK', 'Balice', 'Kraków', 'Europe/Warsaw'),
    ('GRU', 'Guarulhos', 'São Paulo', 'America/Sao_Paulo'), ('KIX', 'Kansai', 'Osaka', 'Asia/Tokyo')
ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS bookings.flights (
    flight_id           integer PRIMARY KEY,
    flight_no           char(6) NOT NULL,
    scheduled_departure timestamptz NOT NULL,
    scheduled_arrival   timestamptz NOT NULL,
    departure_airport   char(3) NOT NULL REFERENCES bookings.airports,
    arrival_airport     char(3) NOT NULL REFERENCES bookings.airports,
    status              varchar(20) NOT NULL,
    aircraft_code       char(3) NOT NULL REFERENCES bookings.aircrafts,
    updated_at          timestamptz NOT NULL
);
INSERT INTO bookings.flights
SELECT g,
       'DF' || lpad((g % 9000)::text, 4, '0'),
       timestamptz '2024-05-01 06:00+00' + make_interval(hours => g * 3),
       timestamptz '2024-05-01 06:00+00' + make_interval(hours => g * 3, mins => 90 + g % 240),
       (ARRAY['LIS','OPO','MAD','CDG','FRA','ZRH','WAW','KRK','GRU','KIX'])[1 + g % 10],
       (ARRAY['LIS','OPO','MAD','CDG','FRA','ZRH','WAW','KRK','GRU','KIX'])[1 + (g * 7 + 3) % 10],
       (ARRAY['Scheduled','On Time','Delayed','Arrived'])[1 + g % 4],
       (ARRAY['319','320','321','733','763','773','CR2','CN1','SU9'])[1 + g % 9],
       timestamptz '2024-06-01 00:00+00' + make_interval(mins => g)
FROM generate_series(1, 2000) AS g
ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS bookings.bookings (
    book_ref     char(6) PRIMARY KEY,
    book_date    timestamptz NOT NULL,
    total_amount numeric(10, 2) NOT NULL
);
INSERT INTO bookings.bookings
SELECT upper(lpad(to_hex(g), 6, '0')), timestamptz '2024-04-01 00:00+00' + make_interval(mins => g * 11),
       round((80 + (g * 53) % 1900)::numeric, 2)
FROM generate_series(1, 5000) AS g
ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS bookings.tickets (
    ticket_no       char(13) PRIMARY KEY,
    book_ref        char(6) NOT NULL REFERENCES bookings.bookings,
    flight_id       integer NOT NULL REFERENCES bookings.flights,
    passenger_name  text NOT NULL,
    fare_conditions varchar(10) NOT NULL,
    amount          numeric(10, 2) NOT NULL,
    issued_at       timestamptz NOT NULL
);
INSERT INTO bookings.tickets
SELECT lpad(g::text, 13, '0'), upper(lpad(to_hex(1 + g % 5000), 6, '0')), 1 + (g * 13) % 2000,
       (ARRAY['ANA SILVA','JOÃO PEREIRA','MARIA KOWALSKA','HANS MÜLLER','YUKI TANAKA'])[1 + g % 5] || ' ' || g,
       (ARRAY['Economy','Comfort','Business'])[1 + g % 3], round((40 + (g * 31) % 900)::numeric, 2),
       timestamptz '2024-04-01 00:00+00' + make_interval(mins => g * 7)
FROM generate_series(1, 8000) AS g
ON CONFLICT DO NOTHING;
