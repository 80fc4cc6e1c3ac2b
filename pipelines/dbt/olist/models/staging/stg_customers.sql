select
    customer_id,
    zip_code_prefix,
    city,
    state,
    created_at,
    updated_at
from {{ source('olist', 'customers') }}
