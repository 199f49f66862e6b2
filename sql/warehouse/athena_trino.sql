-- Amazon Athena and Trino over a Verdict object storage export in Parquet (collector sink with
-- format = "parquet" and an s3:// destination; see collector/README.md "Sinks"). The same DDL
-- reads the collector's main lake. Replace BUCKET and PREFIX.
-- Layout: s3://BUCKET/PREFIX/policy_action/dt=YYYY-MM-DD/hour=HH/FIRSTLSN-LASTLSN.SINK.parquet
-- Columns are the lake's flat schema (schema/README.md); timestamps are Parquet
-- TIMESTAMP(NANOS, UTC). Records are delivered at least once: deduplicate on insert_id.

-- Athena (Hive DDL) with partition projection: no MSCK REPAIR or crawler needed.
CREATE EXTERNAL TABLE verdict_policy_action (
  `timestamp`        timestamp,
  receive_timestamp  timestamp,
  insert_id          string,
  log_name           string,
  severity           string,
  resource_type      string,
  project_id         string,
  location           string,
  cluster_name       string,
  resource_node_name string,
  src_ip             string,
  dest_ip            string,
  src_port           int,
  dest_port          int,
  protocol           string,
  direction          string,
  disposition        string,
  policies           array<struct<name:string, namespace:string, kind:string>>,
  src_pod_name       string,
  src_pod_namespace  string,
  src_namespace      string,
  src_workload_name  string,
  src_workload_kind  string,
  src_instance       string,
  dest_pod_name      string,
  dest_pod_namespace string,
  dest_namespace     string,
  dest_workload_name string,
  dest_workload_kind string,
  dest_instance      string,
  `count`            bigint,
  node_name          string,
  enforcement        string
)
PARTITIONED BY (dt string, hour string)
STORED AS PARQUET
LOCATION 's3://BUCKET/PREFIX/policy_action/'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.dt.type' = 'date',
  'projection.dt.format' = 'yyyy-MM-dd',
  'projection.dt.range' = '2024-01-01,NOW',
  'projection.hour.type' = 'integer',
  'projection.hour.range' = '0,23',
  'projection.hour.digits' = '2',
  'storage.location.template' = 's3://BUCKET/PREFIX/policy_action/dt=${dt}/hour=${hour}/'
);

-- Example (Athena or Trino): denies per destination namespace on one day, deduplicated.
-- SELECT dest_namespace, sum("count") AS attempts
-- FROM (SELECT DISTINCT insert_id, dest_namespace, "count"
--       FROM verdict_policy_action WHERE dt = '2026-01-01' AND disposition = 'deny')
-- GROUP BY dest_namespace ORDER BY attempts DESC;

-- Trino (Hive connector; set hive.timestamp-precision=NANOSECONDS to keep nanoseconds).
-- CREATE SCHEMA IF NOT EXISTS hive.verdict WITH (location = 's3://BUCKET/PREFIX/');
CREATE TABLE hive.verdict.policy_action (
  "timestamp"        timestamp(9),
  receive_timestamp  timestamp(9),
  insert_id          varchar,
  log_name           varchar,
  severity           varchar,
  resource_type      varchar,
  project_id         varchar,
  location           varchar,
  cluster_name       varchar,
  resource_node_name varchar,
  src_ip             varchar,
  dest_ip            varchar,
  src_port           integer,
  dest_port          integer,
  protocol           varchar,
  direction          varchar,
  disposition        varchar,
  policies           array(row(name varchar, namespace varchar, kind varchar)),
  src_pod_name       varchar,
  src_pod_namespace  varchar,
  src_namespace      varchar,
  src_workload_name  varchar,
  src_workload_kind  varchar,
  src_instance       varchar,
  dest_pod_name      varchar,
  dest_pod_namespace varchar,
  dest_namespace     varchar,
  dest_workload_name varchar,
  dest_workload_kind varchar,
  dest_instance      varchar,
  "count"            bigint,
  node_name          varchar,
  enforcement        varchar,
  dt                 varchar,
  hour               varchar
)
WITH (
  external_location = 's3://BUCKET/PREFIX/policy_action/',
  format = 'PARQUET',
  partitioned_by = ARRAY['dt', 'hour']
);
-- Register the partitions present (re-run as new hours arrive, or schedule it):
CALL hive.system.sync_partition_metadata('verdict', 'policy_action', 'ADD');
