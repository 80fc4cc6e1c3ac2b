-- What happens in the shop between two runs: new sales, new customers, customers that change.
INSERT INTO public.tb_trx_src (id, creation_date, sale_value)
SELECT g, timestamp '2024-01-01' + make_interval(mins => g * 7), 42.00
FROM generate_series((SELECT max(id) + 1 FROM public.tb_trx_src), (SELECT max(id) + 250 FROM public.tb_trx_src)) AS g;

UPDATE public.customers
SET tier = 'gold', updated_at = (SELECT max(updated_at) FROM public.customers) + interval '1 hour'
WHERE customer_id IN (3, 5, 8);

INSERT INTO public.customers (customer_id, name, email, city, tier, updated_at)
SELECT g, 'New customer ' || g, NULL, 'Osaka', 'basic',
       (SELECT max(updated_at) FROM public.customers) + make_interval(hours => 2)
FROM generate_series((SELECT max(customer_id) + 1 FROM public.customers),
                     (SELECT max(customer_id) + 20 FROM public.customers)) AS g;
