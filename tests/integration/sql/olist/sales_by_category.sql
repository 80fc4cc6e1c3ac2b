-- Revenue and items sold per product category and month (rebuilt from the loaded tables).
CREATE OR REPLACE TABLE `{{ project }}.{{ dataset }}.sales_by_category` AS
SELECT COALESCE(p.category, 'unknown') AS category,
       DATE_TRUNC(DATE(o.purchased_at), MONTH) AS month,
       COUNT(*) AS items,
       SUM(i.price) AS revenue,
       SUM(i.freight_value) AS freight
FROM {{ tables.order_items }} AS i
JOIN {{ tables.products }} AS p ON p.product_id = i.product_id
JOIN {{ tables.orders }} AS o ON o.order_id = i.order_id
WHERE o.status != 'canceled'
GROUP BY category, month
