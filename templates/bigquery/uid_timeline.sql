-- What happened to this file? One file's journey in time order: each stage (when it was logged, how long the
-- file waited for it, and what is usual for that stage within an hour either side, as `stagewatch explain`
-- shows it: for a stage the file was flagged at, the usual its verdict used (the anomaly's median, no count);
-- else the median wait of the customer's other files, from 5 of them, else of everyone's), its anomalies, and
-- the incident events that
-- name it among their first files. Its anomalies show before its trace does: the streaming job writes a
-- stalled file's trace only when the file's session closes, an hour after its last event.
--
-- Partitions read: traces, first_time from 2 hours before @day to the end of @day + 1 day (the file's own
-- trace began on @day; the files it is compared with began from 2 hours before it to an hour after its last
-- stage); anomalies and incidents, event_time and `at` from @day to the end of @day + 1 day.
--
-- param @uid STRING: the file's UID
-- param @day DATE: the day the file's first event was logged (UTC)
WITH nearby AS (
  SELECT uid, tenant, first_time, last_time, closed_at, stages
  FROM `${dataset}.traces`
  WHERE first_time >= TIMESTAMP_SUB(TIMESTAMP(@day), INTERVAL 2 HOUR)
    AND first_time < TIMESTAMP(DATE_ADD(@day, INTERVAL 2 DAY))
),
-- The file's latest trace: a file that resumed after its stall has a second one.
trace AS (
  SELECT *
  FROM nearby
  WHERE uid = @uid AND first_time >= TIMESTAMP(@day) AND first_time < TIMESTAMP(DATE_ADD(@day, INTERVAL 1 DAY))
  QUALIFY ROW_NUMBER() OVER (ORDER BY first_time DESC, closed_at DESC) = 1
),
mine AS (
  SELECT s.*
  FROM trace AS t, UNNEST(t.stages) AS s
),
others AS (
  SELECT s.stage, s.time, s.duration_ms, COALESCE(n.tenant = t.tenant, FALSE) AS same_tenant
  FROM nearby AS n CROSS JOIN trace AS t, UNNEST(n.stages) AS s
  WHERE n.uid != @uid
    AND n.first_time >= TIMESTAMP_SUB(t.first_time, INTERVAL 2 HOUR)
    AND n.first_time < TIMESTAMP_ADD(t.last_time, INTERVAL 1 HOUR)
    AND s.duration_ms IS NOT NULL
),
pool AS (  -- each neighbour's wait among everyone's, and once more among the customer's own
  SELECT stage, time, duration_ms, FALSE AS own FROM others
  UNION ALL
  SELECT stage, time, duration_ms, TRUE FROM others WHERE same_tenant
),
usual AS (
  SELECT stage, time, own, ANY_VALUE(median_ms) AS median_ms, COUNT(*) AS n
  FROM (
    SELECT
      m.stage,
      m.time,
      p.own,
      PERCENTILE_CONT(p.duration_ms, 0.5) OVER (PARTITION BY m.stage, m.time, p.own) AS median_ms
    FROM mine AS m
    JOIN pool AS p
      ON p.stage = m.stage
      AND p.time BETWEEN TIMESTAMP_SUB(m.time, INTERVAL 1 HOUR) AND TIMESTAMP_ADD(m.time, INTERVAL 1 HOUR)
  )
  GROUP BY stage, time, own
),
its_anomalies AS (
  SELECT *
  FROM `${dataset}.anomalies`
  WHERE event_time >= TIMESTAMP(@day)
    AND event_time < TIMESTAMP(DATE_ADD(@day, INTERVAL 2 DAY))
    AND uid = @uid
  QUALIFY ROW_NUMBER() OVER (PARTITION BY anomaly_id ORDER BY detected_at) = 1  -- a retried insert, once
),
flagged AS (  -- the first verdict at each stage: what it was judged against
  SELECT stage, expected_ms
  FROM its_anomalies
  QUALIFY ROW_NUMBER() OVER (PARTITION BY stage ORDER BY event_time, anomaly_id) = 1
),
events AS (
  SELECT
    m.time,
    'stage' AS source,
    m.stage,
    m.verdict AS what,
    m.duration_ms AS waited_ms,
    CASE WHEN f.stage IS NOT NULL THEN f.expected_ms WHEN w.n >= 5 THEN w.median_ms WHEN u.n >= 5 THEN u.median_ms
      END AS usual_ms,
    CASE WHEN f.stage IS NOT NULL THEN NULL WHEN w.n >= 5 THEN w.n WHEN u.n >= 5 THEN u.n END AS usual_n,
    CAST(NULL AS STRING) AS message,
    0 AS source_order
  FROM mine AS m
  LEFT JOIN usual AS u ON u.stage = m.stage AND u.time = m.time AND NOT u.own
  LEFT JOIN usual AS w ON w.stage = m.stage AND w.time = m.time AND w.own
  LEFT JOIN flagged AS f ON f.stage = m.stage
  UNION ALL
  SELECT
    event_time, 'anomaly', stage, kind, observed_ms, expected_ms, CAST(NULL AS INT64), message, 1
  FROM its_anomalies
  UNION ALL
  SELECT
    `at`, 'incident', stage, event, worst_observed_ms, expected_ms, CAST(NULL AS INT64), message, 2
  FROM `${dataset}.incidents`
  WHERE `at` >= TIMESTAMP(@day)
    AND `at` < TIMESTAMP(DATE_ADD(@day, INTERVAL 2 DAY))
    AND @uid IN UNNEST(sample_uids)
)
SELECT time, source, stage, what, waited_ms, usual_ms, usual_n, message
FROM events
ORDER BY time, source_order, stage
