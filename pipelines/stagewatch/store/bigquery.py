"""Talking to BigQuery: a client (the emulator's when ``BIGQUERY_EMULATOR_HOST`` is set) and the creation of the
dataset and tables that ``store.schemas`` describes."""

from __future__ import annotations

import os
from typing import Any

from stagewatch.store.schemas import TABLES, Field

__all__ = ["bigquery_client", "create_tables"]


def bigquery_client(project: str) -> Any:
    """A BigQuery client; against the emulator (anonymous) when ``BIGQUERY_EMULATOR_HOST`` is set."""
    from google.cloud import bigquery

    endpoint = os.environ.get("BIGQUERY_EMULATOR_HOST")
    if not endpoint:
        return bigquery.Client(project=project)
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return bigquery.Client(
        project=project, credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=endpoint)
    )


def _schema(fields: tuple[Field, ...]) -> list[Any]:
    from google.cloud import bigquery

    return [bigquery.SchemaField(f.name, f.type, mode=f.mode, fields=_schema(f.fields)) for f in fields]


def create_tables(client: Any, dataset: str) -> list[str]:
    """Create the dataset and any missing table (partitioned, clustered), and add to an existing table the
    columns a newer release writes (else BigQuery refuses its rows: "no such field"). Returns what it did:
    the tables it created, and ``"<table> +<column>,..."`` for those it extended."""
    from google.api_core.exceptions import NotFound
    from google.cloud import bigquery

    client.create_dataset(dataset, exists_ok=True)
    done = []
    for t in TABLES.values():
        table_id = f"{dataset}.{t.name}"
        try:
            existing = client.get_table(table_id)
        except NotFound:
            existing = None
        if existing is not None:
            have = {f.name for f in existing.schema}
            # BigQuery adds columns only as NULLABLE (or REPEATED): old rows have none.
            missing = [Field(f.name, f.type, "REPEATED" if f.mode == "REPEATED" else "NULLABLE", f.fields)
                       for f in t.fields if f.name not in have]
            if missing:
                existing.schema = [*existing.schema, *_schema(tuple(missing))]
                client.update_table(existing, ["schema"])
                done.append(f"{t.name} +{','.join(f.name for f in missing)}")
            continue
        table = bigquery.Table(table_id, schema=_schema(t.fields))
        table.time_partitioning = bigquery.TimePartitioning(type_=bigquery.TimePartitioningType.DAY,
                                                            field=t.partition_field)
        table.clustering_fields = list(t.clustering)
        table.description = t.description
        client.create_table(table)
        done.append(t.name)
    return done
