-- How long did the lots take? Every lot whose first file began on @day: its tenants and files, when it
-- started, when its last file came in (submitted_at), when it finished (its files' last event), how long it
-- took to finish once all of it was in (duration_ms: submitted to finished, what the lots judge measures) and
-- from its start (span_ms); and the verdict of the lots table when the lot was judged incomplete or slow.
--
-- Partitions read: traces, first_time from the start of @day - 1 day to the end of @day + 1 day (a lot that
-- began on @day may have files after midnight; a lot that began the day before is read whole, to be left
-- out); lots, finished_at from @day to the end of @day + 2 days. A lot spanning more than that is cut.
--
-- param @day DATE: the day the lots began (UTC)
-- view lot_durations_today: day = CURRENT_DATE()
WITH traces AS (
  SELECT *
  FROM `${dataset}.traces`
  WHERE first_time >= TIMESTAMP(DATE_SUB(@day, INTERVAL 1 DAY))
    AND first_time < TIMESTAMP(DATE_ADD(@day, INTERVAL 2 DAY))
    AND lot IS NOT NULL
  -- One row per file: a retried streaming insert, or a file that resumed after a stall, can write two.
  QUALIFY ROW_NUMBER() OVER (PARTITION BY uid ORDER BY closed_at DESC) = 1
),
lot_files AS (
  SELECT
    lot,
    ARRAY_AGG(tenant IGNORE NULLS) AS tenant_of_each_file,
    COUNT(*) AS files,
    COUNTIF(status = 'complete') AS complete,
    MIN(first_time) AS started_at,
    MAX(first_time) AS submitted_at,
    MAX(last_time) AS finished_at
  FROM traces
  GROUP BY lot
),
verdicts AS (
  SELECT lot, kind, expected_ms, message
  FROM `${dataset}.lots`
  WHERE finished_at >= TIMESTAMP(@day)
    AND finished_at < TIMESTAMP(DATE_ADD(@day, INTERVAL 3 DAY))
  QUALIFY ROW_NUMBER() OVER (PARTITION BY lot ORDER BY finished_at DESC) = 1
)
SELECT
  l.lot,
  ARRAY(SELECT DISTINCT tenant FROM UNNEST(l.tenant_of_each_file) AS tenant ORDER BY tenant) AS tenants,
  l.files,
  l.files - l.complete AS unfinished,
  l.started_at,
  l.submitted_at,
  l.finished_at,
  TIMESTAMP_DIFF(l.finished_at, l.submitted_at, MICROSECOND) / 1000 AS duration_ms,
  TIMESTAMP_DIFF(l.finished_at, l.started_at, MICROSECOND) / 1000 AS span_ms,
  v.kind AS verdict,
  v.expected_ms,
  v.message
FROM lot_files AS l
LEFT JOIN verdicts AS v USING (lot)
WHERE DATE(l.started_at) = @day
ORDER BY duration_ms DESC, l.lot
