-- Orders, paying customers and paid value per customer state;
-- replaces pipelines/transforms/olist/orders_by_state.sql.
select
    c.state,
    count(distinct o.order_id)       as orders,
    count(distinct o.customer_id)    as customers,
    sum(p.payment_value)             as paid_value
from {{ ref('stg_orders') }} as o
join {{ ref('stg_customers') }} as c on c.customer_id = o.customer_id
left join {{ ref('stg_payments') }} as p on p.order_id = o.order_id and p.is_paid
group by c.state
