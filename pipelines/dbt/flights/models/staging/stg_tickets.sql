select
    ticket_no::text             as ticket_no,
    book_ref::text              as book_ref,
    flight_id::integer          as flight_id,
    passenger_name,
    fare_conditions::text       as fare_conditions,
    amount::numeric(10, 2)      as amount,
    issued_at
from {{ source('flights', 'tickets') }}
