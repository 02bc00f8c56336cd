-- Which customers are slowest? Tenants ranked by the p95 end-to-end time of their files that began on @day
-- (first event to the terminal stage; only complete files have one), with the p50, how many files, how
-- many stalled, failed or are still open, and how many anomalies they had that day. Files with no tenant
-- are left out.
--
-- Partitions read: traces, first_time on @day; anomalies, event_time on @day.
--
-- param @day DATE: the day to look at (UTC)
-- view slowest_tenants_today: day = CURRENT_DATE()
WITH files AS (
  SELECT tenant, status, end_to_end_ms
  FROM `${dataset}.traces`
  WHERE first_time >= TIMESTAMP(@day)
    AND first_time < TIMESTAMP(DATE_ADD(@day, INTERVAL 1 DAY))
    AND tenant IS NOT NULL
  -- One row per file: a retried streaming insert, or a file that resumed after a stall, can write two.
  QUALIFY ROW_NUMBER() OVER (PARTITION BY uid ORDER BY closed_at DESC) = 1
),
counts AS (
  SELECT
    tenant,
    COUNT(*) AS files,
    COUNTIF(status = 'complete') AS complete,
    COUNTIF(status = 'stalled') AS stalled,
    COUNTIF(status = 'failed') AS failed,
    COUNTIF(status = 'open') AS open
  FROM files
  GROUP BY tenant
),
end_to_end AS (
  SELECT
    tenant,
    ANY_VALUE(p50_ms) AS p50_ms,
    ANY_VALUE(p95_ms) AS p95_ms
  FROM (
    SELECT
      tenant,
      PERCENTILE_CONT(end_to_end_ms, 0.5) OVER w AS p50_ms,
      PERCENTILE_CONT(end_to_end_ms, 0.95) OVER w AS p95_ms
    FROM files
    WHERE end_to_end_ms IS NOT NULL
    WINDOW w AS (PARTITION BY tenant)
  )
  GROUP BY tenant
),
flagged AS (
  SELECT tenant, COUNT(DISTINCT anomaly_id) AS anomalies
  FROM `${dataset}.anomalies`
  WHERE event_time >= TIMESTAMP(@day)
    AND event_time < TIMESTAMP(DATE_ADD(@day, INTERVAL 1 DAY))
    AND tenant IS NOT NULL
  GROUP BY tenant
)
SELECT
  c.tenant,
  e.p50_ms,
  e.p95_ms,
  c.files,
  c.complete,
  c.stalled,
  c.failed,
  c.open,
  IFNULL(f.anomalies, 0) AS anomalies
FROM counts AS c
LEFT JOIN end_to_end AS e USING (tenant)
LEFT JOIN flagged AS f USING (tenant)
ORDER BY e.p95_ms DESC NULLS LAST, c.tenant
