select
    order_id,
    order_item_id,
    concat(order_id, '-', cast(order_item_id as string)) as order_item_key,
    product_id,
    seller_id,
    price,
    freight_value,
    updated_at
from {{ source('olist', 'order_items') }}
