-- Between two runs: new customers and orders (with items and payments), and orders delivered since.
INSERT INTO olist.customers
SELECT md5('customer' || g)::uuid, lpad(((g * 7919) % 99999)::text, 5, '0'), 'Manaus', 'AM',
       now(), now()
FROM generate_series(1501, 1520) AS g;

INSERT INTO olist.orders
SELECT md5('order' || g)::uuid, md5('customer' || (1501 + g % 20))::uuid, 'processing',
       localtimestamp(0), NULL, NULL, current_date + 20, now()
FROM generate_series(3001, 3040) AS g;

INSERT INTO olist.order_items
SELECT md5('order' || o)::uuid, 1, md5('product' || (1 + o % 400))::uuid, md5('seller' || (1 + o % 60))::uuid,
       59.90, 12.35, now()
FROM generate_series(3001, 3040) AS o;

INSERT INTO olist.payments
SELECT o, md5('order' || o)::uuid, 'credit_card', 3, 72.25, true, now()
FROM generate_series(3001, 3040) AS o;

UPDATE olist.orders
SET status = 'delivered', delivered_at = localtimestamp(0), updated_at = now()
WHERE status = 'shipped' AND order_id IN (SELECT md5('order' || g)::uuid FROM generate_series(13, 390, 13) AS g);
