-- Is it slow today? Each stage's p50 and p95 wait on @day against the same hours of the same weekday in
-- each of the @weeks weeks before. "The same hours" are the hours @day has data for, from its first file to
-- its last (so a day still in progress is compared with the same part of the earlier days). A file counts on
-- the day and at the time of day of its first event, the traces table's partition column.
--
-- Partitions read: traces, first_time from @day - 7 x @weeks days to the end of @day (7 x @weeks + 1 days).
--
-- param @day DATE: the day to look at (UTC)
-- param @weeks INT64 = 4: how many earlier weeks to compare it with
-- view stage_latency_today: day = CURRENT_DATE(); weeks = 4
WITH waits AS (
  SELECT
    DATE(t.first_time) AS day,
    TIMESTAMP_DIFF(t.first_time, TIMESTAMP(DATE(t.first_time)), MICROSECOND) AS time_of_day_us,
    s.stage,
    s.duration_ms
  FROM `${dataset}.traces` AS t, UNNEST(t.stages) AS s
  WHERE t.first_time >= TIMESTAMP(DATE_SUB(@day, INTERVAL @weeks WEEK))
    AND t.first_time < TIMESTAMP(DATE_ADD(@day, INTERVAL 1 DAY))
    AND MOD(DATE_DIFF(@day, DATE(t.first_time), DAY), 7) = 0  -- the same weekday
    AND s.duration_ms IS NOT NULL  -- a file's first stage has no wait
    AND IFNULL(s.verdict, '') != 'skew'  -- a negative wait, kept as 0: a clock's error, not a wait (clock_skew.sql)
  -- One wait per file and stage: a retried streaming insert can write a trace twice.
  QUALIFY ROW_NUMBER() OVER (PARTITION BY t.uid, s.stage ORDER BY t.closed_at DESC) = 1
),
hours AS (
  SELECT MIN(time_of_day_us) AS from_us, MAX(time_of_day_us) AS to_us FROM waits WHERE day = @day
),
compared AS (
  SELECT w.stage, w.day, IF(w.day = @day, 'day', 'before') AS period, w.duration_ms
  FROM waits AS w CROSS JOIN hours AS h
  WHERE w.time_of_day_us BETWEEN h.from_us AND h.to_us
),
-- PERCENTILE_CONT is exact (it interpolates like numpy's default), unlike APPROX_QUANTILES, so the answer
-- does not depend on how BigQuery shards the rows; as an analytic function it needs a window, then GROUP BY.
quantiles AS (
  SELECT
    stage, period, day,
    PERCENTILE_CONT(duration_ms, 0.5) OVER w AS p50_ms,
    PERCENTILE_CONT(duration_ms, 0.95) OVER w AS p95_ms
  FROM compared
  WINDOW w AS (PARTITION BY stage, period)
),
per_period AS (
  SELECT stage, period, COUNT(*) AS n, COUNT(DISTINCT day) AS days, ANY_VALUE(p50_ms) AS p50_ms,
    ANY_VALUE(p95_ms) AS p95_ms
  FROM quantiles
  GROUP BY stage, period
)
SELECT
  stage,
  d.n,
  d.p50_ms,
  d.p95_ms,
  b.n AS n_before,
  b.days AS days_before,
  b.p50_ms AS p50_before_ms,
  b.p95_ms AS p95_before_ms,
  SAFE_DIVIDE(d.p50_ms, b.p50_ms) AS p50_ratio,
  SAFE_DIVIDE(d.p95_ms, b.p95_ms) AS p95_ratio,
  TIMESTAMP_ADD(TIMESTAMP(@day), INTERVAL h.from_us MICROSECOND) AS hours_from,
  TIMESTAMP_ADD(TIMESTAMP(@day), INTERVAL h.to_us MICROSECOND) AS hours_to
FROM (SELECT * FROM per_period WHERE period = 'day') AS d
FULL OUTER JOIN (SELECT * FROM per_period WHERE period = 'before') AS b USING (stage)
CROSS JOIN hours AS h
ORDER BY p95_ratio DESC NULLS LAST, stage
