"""Telling people: incident events from the job's topic to Slack."""
