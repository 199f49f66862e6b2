-- Denied records and connections per minute of event time (UTC), per cluster. For a time
-- range over a large lake, filter `policy_action` on "timestamp" in your own query (a filter on
-- `minute` is applied after the aggregation and does not prune files).
SELECT
  date_trunc('minute', "timestamp") AS minute,
  cluster_name,
  count(*) AS deny_records,
  sum("count") AS denied_connections
FROM policy_action
WHERE disposition = 'deny'
GROUP BY 1, 2
