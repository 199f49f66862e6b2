-- Sources by connections: a pod as NAMESPACE/WORKLOAD (its pod name when it has no owner), a
-- non-pod endpoint by its address. Order by `connections` or `denied_connections` to rank.
SELECT
  coalesce(src_pod_namespace || '/' || coalesce(src_workload_name, src_pod_name), src_instance)
    AS source,
  count(*) AS records,
  sum("count") AS connections,
  sum(CASE WHEN disposition = 'deny' THEN "count" ELSE 0 END) AS denied_connections,
  count(DISTINCT dest_ip) AS destinations
FROM policy_action
GROUP BY 1
