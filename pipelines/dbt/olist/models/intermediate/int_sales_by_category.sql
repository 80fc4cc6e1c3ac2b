-- Revenue and items sold per product category and month; replaces pipelines/transforms/olist/sales_by_category.sql.
select
    coalesce(p.category, 'unknown')            as category,
    date_trunc(date(o.purchased_at), month)    as month,
    count(*)                                   as items,
    sum(i.price)                               as revenue,
    sum(i.freight_value)                       as freight
from {{ ref('stg_order_items') }} as i
join {{ ref('stg_products') }} as p on p.product_id = i.product_id
join {{ ref('stg_orders') }} as o on o.order_id = i.order_id
where o.status != 'canceled'
group by category, month
