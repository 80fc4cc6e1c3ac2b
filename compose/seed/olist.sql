-- Source data for pipelines/olist_to_bigquery.yml: an e-commerce orders schema in the shape of the
-- public Olist dataset (customers, sellers, products, orders, order items, payments), generated
-- deterministically. Column types cover most of the BigQuery type map.
CREATE SCHEMA IF NOT EXISTS olist;

CREATE TABLE IF NOT EXISTS olist.customers (
    customer_id     uuid PRIMARY KEY,
    zip_code_prefix char(5) NOT NULL,
    city            text NOT NULL,
    state           char(2) NOT NULL,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
INSERT INTO olist.customers
SELECT md5('customer' || g)::uuid,
       lpad(((g * 7919) % 99999)::text, 5, '0'),
       (ARRAY['São Paulo', 'Rio de Janeiro', 'Belo Horizonte', 'Curitiba', 'Porto Alegre', 'Salvador',
              'Brasília', 'Fortaleza', 'Recife', 'Campinas'])[1 + g % 10],
       (ARRAY['SP', 'RJ', 'MG', 'PR', 'RS', 'BA', 'DF', 'CE', 'PE', 'SP'])[1 + g % 10],
       timestamptz '2017-01-01 00:00+00' + make_interval(hours => g * 5),
       timestamptz '2017-01-01 00:00+00' + make_interval(hours => g * 5)
FROM generate_series(1, 1500) AS g
ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS olist.sellers (
    seller_id       uuid PRIMARY KEY,
    zip_code_prefix char(5) NOT NULL,
    city            text NOT NULL,
    state           char(2) NOT NULL
);
INSERT INTO olist.sellers
SELECT md5('seller' || g)::uuid, lpad(((g * 104729) % 99999)::text, 5, '0'),
       (ARRAY['São Paulo', 'Ibitinga', 'Curitiba', 'Santo André', 'Maringá'])[1 + g % 5],
       (ARRAY['SP', 'SP', 'PR', 'SP', 'PR'])[1 + g % 5]
FROM generate_series(1, 60) AS g
ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS olist.products (
    product_id     uuid PRIMARY KEY,
    category       text,
    name_length    smallint,
    photos_qty     smallint,
    weight_g       integer,
    dimensions_cm  numeric(6,1)[],
    attributes     jsonb NOT NULL DEFAULT '{}'
);
INSERT INTO olist.products
SELECT md5('product' || g)::uuid,
       CASE WHEN g % 50 = 0 THEN NULL
            ELSE (ARRAY['bed_bath_table', 'health_beauty', 'sports_leisure', 'furniture_decor',
                        'computers_accessories', 'housewares', 'watches_gifts', 'telephony', 'garden_tools',
                        'auto', 'toys', 'cool_stuff'])[1 + g % 12] END,
       20 + g % 40, 1 + g % 6, 100 + (g * 37) % 15000,
       ARRAY[10 + g % 50, 5 + g % 30, 2 + g % 20]::numeric(6,1)[],
       jsonb_build_object('fragile', g % 7 = 0, 'colors', to_jsonb((ARRAY['black', 'white'])[1:1 + g % 2]))
FROM generate_series(1, 400) AS g
ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS olist.orders (
    order_id                 uuid PRIMARY KEY,
    customer_id              uuid NOT NULL REFERENCES olist.customers,
    status                   varchar(20) NOT NULL,
    purchased_at             timestamp NOT NULL,
    approved_at              timestamp,
    delivered_at             timestamp,
    estimated_delivery_date  date NOT NULL,
    updated_at               timestamptz NOT NULL
);
INSERT INTO olist.orders
SELECT md5('order' || g)::uuid,
       md5('customer' || (1 + (g * 31) % 1500))::uuid,
       CASE WHEN g % 40 = 0 THEN 'canceled' WHEN g % 13 = 0 THEN 'shipped' ELSE 'delivered' END,
       timestamp '2017-03-01 08:00' + make_interval(mins => g * 97),
       timestamp '2017-03-01 08:00' + make_interval(mins => g * 97 + 45),
       CASE WHEN g % 40 = 0 OR g % 13 = 0 THEN NULL
            ELSE timestamp '2017-03-01 08:00' + make_interval(mins => g * 97, days => 3 + g % 20) END,
       (timestamp '2017-03-01 08:00' + make_interval(mins => g * 97, days => 25))::date,
       timestamptz '2017-03-01 08:00+00' + make_interval(mins => g * 97, days => 1)
FROM generate_series(1, 3000) AS g
ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS olist.order_items (
    order_id      uuid NOT NULL REFERENCES olist.orders,
    order_item_id smallint NOT NULL,
    product_id    uuid NOT NULL REFERENCES olist.products,
    seller_id     uuid NOT NULL REFERENCES olist.sellers,
    price         numeric(10,2) NOT NULL,
    freight_value numeric(10,2) NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (order_id, order_item_id)
);
INSERT INTO olist.order_items
SELECT md5('order' || o)::uuid, i, md5('product' || (1 + (o * 17 + i) % 400))::uuid,
       md5('seller' || (1 + (o + i) % 60))::uuid,
       round((9.9 + ((o * 7 + i * 13) % 2000) / 3.0)::numeric, 2), round((7 + (o % 30) * 0.97)::numeric, 2),
       timestamptz '2017-03-01 08:00+00' + make_interval(mins => o * 97, days => 1)
FROM generate_series(1, 3000) AS o, generate_series(1, 1 + (o % 3)) AS i
WHERE i <= 1 + (o % 3)
ON CONFLICT DO NOTHING;

CREATE TABLE IF NOT EXISTS olist.payments (
    payment_id    bigint PRIMARY KEY,
    order_id      uuid NOT NULL REFERENCES olist.orders,
    payment_type  text NOT NULL,
    installments  smallint NOT NULL,
    payment_value numeric(12,2) NOT NULL,
    paid          boolean NOT NULL,
    updated_at    timestamptz NOT NULL
);
INSERT INTO olist.payments
SELECT o, md5('order' || o)::uuid, (ARRAY['credit_card', 'boleto', 'voucher', 'debit_card'])[1 + o % 4],
       1 + o % 10, round((20 + ((o * 7) % 2000) / 2.5)::numeric, 2), o % 40 <> 0,
       timestamptz '2017-03-01 08:00+00' + make_interval(mins => o * 97, hours => 2)
FROM generate_series(1, 3000) AS o
ON CONFLICT DO NOTHING;
