-- Denied connections per enforced namespace, workload and direction. The enforced pod is the
-- destination for ingress and the source for egress (the pod a NetworkPolicy isolated); deny
-- records of a non-pod endpoint there have a NULL namespace. `connections` sums `count`
-- (aggregated denies carry the attempts of their 5-second window).
SELECT
  CASE WHEN direction = 'ingress' THEN dest_pod_namespace ELSE src_pod_namespace END AS namespace,
  CASE WHEN direction = 'ingress' THEN dest_workload_name ELSE src_workload_name END AS workload,
  direction,
  count(*) AS records,
  sum("count") AS connections,
  min("timestamp") AS first_seen,
  max("timestamp") AS last_seen
FROM policy_action
WHERE disposition = 'deny'
GROUP BY 1, 2, 3
