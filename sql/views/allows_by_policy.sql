-- Allowed connections per policy that allowed them. An allow record lists every allowing
-- policy, so a connection two policies allow counts for both. Kubelet probe traffic appears
-- under the empty policy name (GKE logs it with `policies: [{"name": ""}]`). Deny records
-- carry no policies (Kubernetes has no deny rules): see denies_by_namespace.
SELECT
  p['namespace'] AS policy_namespace,
  p['name'] AS policy_name,
  p['kind'] AS policy_kind,
  CASE WHEN direction = 'ingress' THEN dest_pod_namespace ELSE src_pod_namespace END AS namespace,
  count(*) AS records,
  sum(connections) AS connections
FROM (
  SELECT unnest(policies) AS p, direction, dest_pod_namespace, src_pod_namespace,
         "count" AS connections
  FROM policy_action
  WHERE disposition = 'allow'
)
GROUP BY 1, 2, 3, 4
