-- One row per order: customer state, item totals, paid totals and delivery days.
with items as (
    select
        order_id,
        count(*)              as item_count,
        sum(price)            as items_value,
        sum(freight_value)    as freight_value
    from {{ ref('stg_order_items') }}
    group by order_id
),

payments as (
    select
        order_id,
        count(*)                                     as payment_count,
        sum(if(is_paid, payment_value, 0))           as paid_value,
        sum(if(is_paid, 0, payment_value))           as unpaid_value
    from {{ ref('stg_payments') }}
    group by order_id
)

select
    o.order_id,
    o.customer_id,
    c.state                                                       as customer_state,
    o.status,
    o.purchased_at,
    o.purchase_date,
    o.approved_at,
    o.delivered_at,
    o.estimated_delivery_date,
    coalesce(i.item_count, 0)                                     as item_count,
    coalesce(i.items_value, 0)                                    as items_value,
    coalesce(i.freight_value, 0)                                  as freight_value,
    coalesce(i.items_value, 0) + coalesce(i.freight_value, 0)     as order_value,
    coalesce(p.payment_count, 0)                                  as payment_count,
    coalesce(p.paid_value, 0)                                     as paid_value,
    coalesce(p.unpaid_value, 0)                                   as unpaid_value,
    datetime_diff(o.delivered_at, o.purchased_at, hour) / 24      as delivery_days,
    o.delivered_at is not null                                    as is_delivered,
    coalesce(date(o.delivered_at) > o.estimated_delivery_date, false) as is_late
from {{ ref('stg_orders') }} as o
left join {{ ref('stg_customers') }} as c on c.customer_id = o.customer_id
left join items as i on i.order_id = o.order_id
left join payments as p on p.order_id = o.order_id
