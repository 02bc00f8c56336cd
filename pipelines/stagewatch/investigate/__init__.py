"""Answering questions from a run's tables: one file's story (``explain``) and the day's report (``report``)."""
