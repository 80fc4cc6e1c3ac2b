-- Aircraft dimension: one row per aircraft model, with its range class.
CREATE SCHEMA IF NOT EXISTS dwh;
CREATE TABLE IF NOT EXISTS dwh.dim_aircrafts (
    aircraft_code char(3) PRIMARY KEY,
    model         text NOT NULL,
    range_km      integer NOT NULL,
    range_class   text NOT NULL
);
DELETE FROM dwh.dim_aircrafts;
INSERT INTO dwh.dim_aircrafts
SELECT aircraft_code, model, range_km,
       CASE WHEN range_km >= 7000 THEN 'long haul' WHEN range_km >= 3000 THEN 'medium haul' ELSE 'short haul' END
FROM {{ tables.aircrafts }};
