-- Connections from each source namespace to each destination namespace, allowed and denied.
-- Endpoints that are not pods (node IPs, external addresses) are '(external)'. A connection
-- between two isolated pods can be logged twice (egress at the source, ingress at the
-- destination), as GKE does; filter on `direction` to count each side once.
SELECT
  coalesce(src_pod_namespace, '(external)') AS src_namespace,
  coalesce(dest_pod_namespace, '(external)') AS dest_namespace,
  direction,
  sum(CASE WHEN disposition = 'allow' THEN "count" ELSE 0 END) AS allowed_connections,
  sum(CASE WHEN disposition = 'deny' THEN "count" ELSE 0 END) AS denied_connections
FROM policy_action
GROUP BY 1, 2, 3
