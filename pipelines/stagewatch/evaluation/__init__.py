"""Measuring detection: the simulator and its labels (``simulate``), scoring against labels (``scoring``), and
public labelled data -- DeLag request latencies (``delag``, ``delag_eval``, beside Beam's detectors in
``peers``) and NAB series (``nab``)."""
