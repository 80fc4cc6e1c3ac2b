-- One row per booking day (UTC): bookings made, their booked total, and the tickets they hold.
with tickets_per_booking as (
    select
        book_ref,
        count(*)    as tickets,
        sum(amount) as ticket_revenue
    from {{ ref('stg_tickets') }}
    group by book_ref
)

select
    b.booking_day,
    count(*)                                    as bookings,
    sum(b.total_amount)                         as booked_amount,
    coalesce(sum(t.tickets), 0)::bigint         as tickets,
    coalesce(sum(t.ticket_revenue), 0)          as ticket_revenue,
    count(*) filter (where t.book_ref is null)  as bookings_without_tickets
from {{ ref('stg_bookings') }} as b
left join tickets_per_booking as t on t.book_ref = b.book_ref
group by b.booking_day
