"""The job's steps, one module each: parse, dedup, assemble traces, learn baselines, judge, watch stalls, track
incidents and lots; ``timers`` is the one-timer bookkeeping the stateful steps share."""
