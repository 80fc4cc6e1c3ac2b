-- One row per flight, with the cities it connects and how long it is scheduled to take.
select
    f.flight_id,
    f.flight_no,
    f.departure_airport,
    dep.city                                                        as departure_city,
    f.arrival_airport,
    arr.city                                                        as arrival_city,
    f.departure_airport || '-' || f.arrival_airport                 as route_code,
    f.departs_at,
    f.arrives_at,
    (f.departs_at at time zone 'UTC')::date                         as departure_day,
    (extract(epoch from f.arrives_at - f.departs_at) / 60)::integer as duration_minutes,
    f.status,
    f.aircraft_code
from {{ ref('stg_flights') }} as f
join {{ ref('stg_airports') }} as dep on dep.airport_code = f.departure_airport
join {{ ref('stg_airports') }} as arr on arr.airport_code = f.arrival_airport
