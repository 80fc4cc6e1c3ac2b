"""dbt projects as tasks: the project read without dbt (:mod:`.project`), the profile from Airflow
connections (:mod:`.profiles`, runtime only), the tasks in the plan (:mod:`dagforge.plan.dbt`)."""
