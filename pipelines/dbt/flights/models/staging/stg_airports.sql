select
    airport_code::text as airport_code,
    airport_name,
    city,
    timezone
from {{ source('flights', 'airports') }}
