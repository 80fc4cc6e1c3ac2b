-- Average days from purchase to delivery, and how many orders came late, per customer state.
CREATE OR REPLACE TABLE `{{ project }}.{{ dataset }}.delivery_times` AS
SELECT c.state,
       COUNT(*) AS delivered_orders,
       AVG(DATETIME_DIFF(o.delivered_at, o.purchased_at, HOUR)) / 24 AS avg_delivery_days,
       COUNTIF(DATE(o.delivered_at) > o.estimated_delivery_date) AS late_orders
FROM {{ tables.orders }} AS o
JOIN {{ tables.customers }} AS c ON c.customer_id = o.customer_id
WHERE o.delivered_at IS NOT NULL
GROUP BY c.state
