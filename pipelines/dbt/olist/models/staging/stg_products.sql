select
    product_id,
    category,                           -- NULL for uncategorised products
    name_length,
    photos_qty,
    weight_g,
    array_length(dimensions_cm) as dimension_count,
    json_value(attributes, '$.fragile') = 'true' as is_fragile
from {{ source('olist', 'products') }}
