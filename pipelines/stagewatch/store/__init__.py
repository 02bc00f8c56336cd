"""Where the job's records are kept and read back: the BigQuery tables' schemas and row checks (``schemas``,
pure), the BigQuery client and table creation (``bigquery``), readers of a run's tables from a local folder or
BigQuery (``readers``), and the views and queries of ``templates/bigquery`` (``views``)."""
