-- BigQuery over a Verdict object storage export (collector sink with an s3://, gs:// or
-- az:// destination; see collector/README.md "Sinks"). Replace PROJECT, DATASET, BUCKET and
-- PREFIX. The export's layout is hive-partitioned by event time:
--   gs://BUCKET/PREFIX/policy_action/dt=YYYY-MM-DD/hour=HH/FIRSTLSN-LASTLSN.SINK.parquet
--   gs://BUCKET/PREFIX/policy_action_loss/dt=…/hour=…/…          (loss markers)
-- The same DDL reads the collector's main lake (storage.url), which has the same layout.
-- Records are delivered at least once: deduplicate on insert_id / insertId.

-- 1. Parquet export (format = "parquet"): the lake's flat schema, detected from the files.
--    Timestamps are Parquet TIMESTAMP(NANOS, UTC); check the type BigQuery infers for
--    `timestamp` on your data (this repository cannot run BigQuery) and cast in the view if it
--    comes out as INT64 nanoseconds.
CREATE EXTERNAL TABLE `PROJECT.DATASET.verdict_policy_action`
WITH PARTITION COLUMNS (
  dt DATE,
  hour INT64
)
OPTIONS (
  format = 'PARQUET',
  uris = ['gs://BUCKET/PREFIX/policy_action/*'],
  hive_partition_uri_prefix = 'gs://BUCKET/PREFIX/policy_action',
  require_hive_partition_filter = FALSE
);

-- One row per record, even when a sink re-sent it.
CREATE OR REPLACE VIEW `PROJECT.DATASET.verdict_policy_action_dedup` AS
SELECT * EXCEPT (rn) FROM (
  SELECT t.*, ROW_NUMBER() OVER (PARTITION BY insert_id ORDER BY receive_timestamp) AS rn
  FROM `PROJECT.DATASET.verdict_policy_action` AS t
)
WHERE rn = 1;

-- Example: denies per destination namespace yesterday (partition pruning on dt).
-- SELECT dest_namespace, SUM(count) AS attempts
-- FROM `PROJECT.DATASET.verdict_policy_action_dedup`
-- WHERE dt = DATE_SUB(CURRENT_DATE(), INTERVAL 1 DAY) AND disposition = 'deny'
-- GROUP BY dest_namespace ORDER BY attempts DESC;

-- 2. JSON lines export (format = "json"): LogEntry JSON, one entry per line, with the schema
--    in bigquery_log_entry_schema.json (nested like Cloud Logging's LogEntry).
CREATE EXTERNAL TABLE `PROJECT.DATASET.verdict_policy_action_json`
WITH PARTITION COLUMNS (
  dt DATE,
  hour INT64
)
OPTIONS (
  format = 'NEWLINE_DELIMITED_JSON',
  uris = ['gs://BUCKET/PREFIX/policy_action/*.jsonl'],
  hive_partition_uri_prefix = 'gs://BUCKET/PREFIX/policy_action',
  ignore_unknown_values = TRUE
);
-- With a schema file, from the command line:
--   bq mkdef --source_format=NEWLINE_DELIMITED_JSON --hive_partitioning_mode=CUSTOM \
--     --hive_partitioning_source_uri_prefix='gs://BUCKET/PREFIX/policy_action/{dt:DATE}/{hour:INTEGER}' \
--     'gs://BUCKET/PREFIX/policy_action/*.jsonl' sql/warehouse/bigquery_log_entry_schema.json > def.json
--   bq mk --external_table_definition=def.json DATASET.verdict_policy_action_json
-- Or load (a native table) instead of querying in place:
--   bq load --source_format=NEWLINE_DELIMITED_JSON DATASET.verdict_policy_action_native \
--     'gs://BUCKET/PREFIX/policy_action/dt=2026-01-01/*' sql/warehouse/bigquery_log_entry_schema.json
