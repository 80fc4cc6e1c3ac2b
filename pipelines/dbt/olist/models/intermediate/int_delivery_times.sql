-- Average days from purchase to delivery, and late orders, per customer state;
-- replaces pipelines/transforms/olist/delivery_times.sql.
select
    c.state,
    count(*)                                                          as delivered_orders,
    avg(datetime_diff(o.delivered_at, o.purchased_at, hour)) / 24     as avg_delivery_days,
    countif(date(o.delivered_at) > o.estimated_delivery_date)         as late_orders
from {{ ref('stg_orders') }} as o
join {{ ref('stg_customers') }} as c on c.customer_id = o.customer_id
where o.delivered_at is not null
group by c.state
