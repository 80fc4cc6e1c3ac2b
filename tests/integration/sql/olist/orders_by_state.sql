-- Orders, paying customers and paid value per customer state.
CREATE OR REPLACE TABLE `{{ project }}.{{ dataset }}.orders_by_state` AS
SELECT c.state,
       COUNT(DISTINCT o.order_id) AS orders,
       COUNT(DISTINCT o.customer_id) AS customers,
       SUM(p.payment_value) AS paid_value
FROM {{ tables.orders }} AS o
JOIN {{ tables.customers }} AS c ON c.customer_id = o.customer_id
LEFT JOIN {{ tables.payments }} AS p ON p.order_id = o.order_id AND p.paid
GROUP BY c.state
