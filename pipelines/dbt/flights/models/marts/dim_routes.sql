-- One row per route (departure airport → arrival airport) that has flights.
with ticket_totals as (
    select
        flight_id,
        count(*)    as tickets,
        sum(amount) as revenue
    from {{ ref('stg_tickets') }}
    group by flight_id
)

select
    l.route_code,
    l.departure_airport,
    l.departure_city,
    l.arrival_airport,
    l.arrival_city,
    count(*)                                    as flights,
    min(l.duration_minutes)                     as min_duration_minutes,
    round(avg(l.duration_minutes), 1)           as avg_duration_minutes,
    max(l.duration_minutes)                     as max_duration_minutes,
    coalesce(sum(t.tickets), 0)::bigint         as tickets,
    coalesce(sum(t.revenue), 0)                 as revenue
from {{ ref('int_flight_legs') }} as l
left join ticket_totals as t on t.flight_id = l.flight_id
group by l.route_code, l.departure_airport, l.departure_city, l.arrival_airport, l.arrival_city
