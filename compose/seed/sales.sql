-- Source data for pipelines/sales_pg_to_pg.yml: the classic tb_trx_src exercise plus a
-- customers table that receives inserts and updates (see changes/sales.sql).
CREATE TABLE IF NOT EXISTS public.tb_trx_src (
    id            integer PRIMARY KEY,
    creation_date timestamp NOT NULL,
    sale_value    numeric(12, 2) NOT NULL
);
INSERT INTO public.tb_trx_src (id, creation_date, sale_value)
SELECT g,
       timestamp '2024-01-01' + make_interval(mins => g * 7),
       round((10 + (g * 37 % 9000) / 7.0)::numeric, 2)
FROM generate_series(1, 5000) AS g
ON CONFLICT (id) DO NOTHING;

CREATE TABLE IF NOT EXISTS public.customers (
    customer_id integer PRIMARY KEY,
    name        text NOT NULL,
    email       text,
    city        text,
    tier        text NOT NULL DEFAULT 'basic',
    updated_at  timestamptz NOT NULL
);
INSERT INTO public.customers (customer_id, name, email, city, tier, updated_at)
SELECT g,
       'Customer ' || g,
       CASE WHEN g % 11 = 0 THEN NULL ELSE 'customer' || g || '@example.com' END,
       (ARRAY['Lisboa', 'São Paulo', 'Zürich', 'Kraków', 'Osaka'])[1 + g % 5],
       CASE WHEN g % 7 = 0 THEN 'gold' ELSE 'basic' END,
       timestamptz '2024-01-01 00:00:00+00' + make_interval(hours => g)
FROM generate_series(1, 1000) AS g
ON CONFLICT (customer_id) DO NOTHING;
