select
    payment_id,
    order_id,
    payment_type,
    installments,
    payment_value,
    paid as is_paid,
    updated_at
from {{ source('olist', 'payments') }}
