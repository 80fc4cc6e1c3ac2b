-- One row per purchase date: orders, items, revenue and freight (canceled orders left out, as in
-- int_sales_by_category), plus what was paid for them.
select
    purchase_date,
    count(*)                                  as orders,
    count(distinct customer_id)               as customers,
    sum(item_count)                           as items,
    sum(items_value)                          as revenue,
    sum(freight_value)                        as freight,
    sum(paid_value)                           as paid_value,
    safe_divide(sum(items_value), count(*))   as avg_order_revenue,
    countif(is_delivered)                     as delivered_orders,
    countif(is_late)                          as late_orders
from {{ ref('fct_orders') }}
where status != 'canceled'
group by purchase_date
