"""The detection core: pure Python (numpy where it helps), no Beam, no I/O, no Google clients.

Log lines become ``StageEvent``s (``events``, ``parser``), a file's events a ``Trace`` (``traces``) that measures
each stage against the stage order (``stages``, ``rules``); measurements are judged against rolling baselines
(``bins``, ``sketch``, ``baselines``, ``verdicts``) into anomalies (``kinds``, ``anomalies``, ``records``), which become
incidents (``incidents``, ``incident``, ``feed``) and lot verdicts (``lots``). Both drivers -- the backtest
(``stagewatch.backtest``) and the streaming job (``stagewatch.stream``) -- call these same functions.
"""
