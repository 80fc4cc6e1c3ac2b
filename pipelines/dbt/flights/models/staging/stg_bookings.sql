select
    book_ref::text                          as book_ref,
    book_date                               as booked_at,
    (book_date at time zone 'UTC')::date    as booking_day,
    total_amount::numeric(10, 2)            as total_amount
from {{ source('flights', 'bookings') }}
