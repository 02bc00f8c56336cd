-- What went wrong that day? Every incident with an event on @day, as its last event that day left it: what
-- (kind, stage), where (scope), since when, whether and when it was resolved, how many files and tenants,
-- the worst file against the usual, and its message.
--
-- Partitions read: incidents, `at` on @day.
--
-- param @day DATE: the day to look at (UTC)
-- view incidents_today: day = CURRENT_DATE()
SELECT
  incident_id,
  kind,
  stage,
  scope,
  scope_key,
  event AS last_event,
  started_at,
  resolved_at,
  `at` AS last_event_at,
  files,
  affected_tenants,
  active_tenants,
  worst_observed_ms,
  expected_ms,
  message
FROM `${dataset}.incidents`
WHERE `at` >= TIMESTAMP(@day)
  AND `at` < TIMESTAMP(DATE_ADD(@day, INTERVAL 1 DAY))
QUALIFY ROW_NUMBER() OVER (PARTITION BY incident_id ORDER BY `at` DESC, files DESC) = 1
ORDER BY started_at, incident_id
