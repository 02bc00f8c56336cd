"""The backtest driver: log files through the core in event-time order, in one process or two.

``engine`` holds the in-process watermark, dedup, timers, traces and baselines; ``front`` reads, parses and
orders lines (optionally in a child process); ``replay`` wires the two and hands records to callbacks;
``config`` reads settings from a TOML file.
"""
