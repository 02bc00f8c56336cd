"""stagewatch: per-file latency anomaly detection for multi-service pipelines on Google Cloud.

One pure detection core (``stagewatch.core``), two drivers around it -- the backtest (``stagewatch.backtest``) and
the Apache Beam streaming job (``stagewatch.stream``) -- and what keeps, tells and reads their records
(``store``, ``notify``, ``investigate``); ``evaluation`` measures it, ``cli`` is the ``stagewatch`` command.
``docs/architecture.md`` draws the flow.
"""

__version__ = "0.1.0"
