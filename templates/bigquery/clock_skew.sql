-- Where is stagewatch blind from a skewed clock? Per customer and stage, the files begun on @day whose wait at
-- that stage came out negative: the stage was logged before the one it follows, so for that customer the host
-- of the stage before (a customer's own uploader, most often) runs ahead of this stage's. Such a wait is neither
-- learned nor judged (the stage's verdict `skew`, counted as `negative_gaps`): where most of a customer's waits
-- at a stage are, a slowdown of that wait is not seen until it outgrows the skew (a latency the stage's line
-- reports is still judged). With how many of its waits there were, and the share. A clock ahead by more than
-- the 30 s a stage waits for the one before it is not listed: that stage is then measured from the one before
-- that. Files with no tenant are counted under a NULL tenant.
--
-- Partitions read: traces, first_time on @day.
--
-- param @day DATE: the day to look at (UTC)
-- view clock_skew_today: day = CURRENT_DATE()
WITH waits AS (
  SELECT t.tenant, s.stage, s.verdict
  FROM `${dataset}.traces` AS t, UNNEST(t.stages) AS s
  WHERE t.first_time >= TIMESTAMP(@day)
    AND t.first_time < TIMESTAMP(DATE_ADD(@day, INTERVAL 1 DAY))
    AND s.duration_ms IS NOT NULL  -- a file's first stage has no wait (a negative one is kept as 0)
  -- One wait per file and stage: a retried streaming insert can write a trace twice.
  QUALIFY ROW_NUMBER() OVER (PARTITION BY t.uid, s.stage ORDER BY t.closed_at DESC) = 1
),
counted AS (
  SELECT tenant, stage, COUNTIF(verdict = 'skew') AS negative, COUNT(*) AS waits
  FROM waits
  GROUP BY tenant, stage
)
SELECT tenant, stage, negative, waits, SAFE_DIVIDE(negative, waits) AS negative_share
FROM counted
WHERE negative > 0
ORDER BY negative_share DESC, negative DESC, tenant, stage
