"""The streaming driver: the Apache Beam job (``pipeline``), its options (``options``; the parameter table in
``parameters`` is Beam-free so the command line can be built without importing Beam), its steps (``steps``: each a
named composite transform calling the core), its sinks (``sinks``) and the corrected in-process runner of local
runs (``local``). Every module here but ``parameters`` imports ``apache_beam``; nothing outside this package does
(the evaluation's Beam peers import it lazily).
"""
