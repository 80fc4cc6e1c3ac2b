select
    flight_id::integer          as flight_id,
    rtrim(flight_no)            as flight_no,
    scheduled_departure         as departs_at,
    scheduled_arrival           as arrives_at,
    departure_airport::text     as departure_airport,
    arrival_airport::text       as arrival_airport,
    status,
    aircraft_code::text         as aircraft_code,
    updated_at
from {{ source('flights', 'flights') }}
