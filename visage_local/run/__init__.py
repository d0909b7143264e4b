"""A sweep, from its settings to its run folder: what it measures (``settings``), prepared
once against its model (``prepared``), one point evaluated (``evaluator``), the estimate
(``estimate``), Ctrl-C and the time budget (``progress``), a run in progress and the
executor contract (``active``), the loop (``sweep``) and Ray's executor (``cluster``),
several sweeps on one grid (``conditions``), a run rebuilt from its folder (``rebuild``),
and cut answers generated again for another judge (``completion``)."""
