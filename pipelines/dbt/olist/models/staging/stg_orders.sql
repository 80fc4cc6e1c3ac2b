select
    order_id,
    customer_id,
    status,
    purchased_at,                       -- DATETIME: the shop's wall-clock time
    date(purchased_at) as purchase_date,
    approved_at,
    delivered_at,
    estimated_delivery_date,
    updated_at
from {{ source('olist', 'orders') }}
