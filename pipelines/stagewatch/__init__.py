"""stagewatch: per-file latency anomaly detection for multi-service pipelines on Google Cloud.

The detection core (``events``, ``stages``, ``sketch``, ``baselines``, ``traces``, ``detector``, ``records``)
is plain Python and never imports ``apache_beam``; the backtest (``replay``) and the streaming job drive it.
"""

__version__ = "0.1.0"
