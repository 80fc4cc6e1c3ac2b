select
    aircraft_code::text as aircraft_code,
    model,
    range_km::integer   as range_km
from {{ source('flights', 'aircrafts') }}
